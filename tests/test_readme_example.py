"""The README's 'Using drojax from another JAX project' example runs as written, and the README's
set-up commands stay the ones .ci/run and the quick-start use."""

import contextlib
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  with open(os.path.join(ROOT, "README.md")) as f:
    return f.read()


def _example_block(text):
  section = text.split("## Using drojax from another JAX project", 1)[1]
  match = re.search(r"```python\n(.*?)```", section, re.S)
  assert match, "the README lost its Python example"
  return match.group(1)


def test_readme_example_runs():
  code = _example_block(_readme())
  out = io.StringIO()
  namespace = {"__name__": "readme_example"}
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
  printed = out.getvalue()
  objective = float(re.search(r"Var-DRO objective: ([0-9.eE+-]+)", printed).group(1))
  robust = float(re.search(r"robust accuracy: ([0-9.eE+-]+)", printed).group(1))
  assert objective > 0 and 0.0 <= robust <= 1.0
  # The example trained: W-DRO steps changed the parameters away from their initial values.
  assert float(abs(namespace["params"]["b"]).sum()) > 0


def test_readme_keeps_the_two_setup_commands():
  text = _readme()
  assert ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m "
          "experiments.cifar_c --method=dro_augmix --preset=quick --dataset=digits "
          "--workdir=runs/quick_dro_augmix") in text
  assert ".venv/bin/python -m pytest -n 2 tests" in text
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    assert "python -m pytest -n 2 tests" in f.read()
