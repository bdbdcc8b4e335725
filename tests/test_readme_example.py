"""The README's 'Using drojax from another JAX project' example runs as written, and the README's
set-up commands stay the ones .ci/run and the quick-start use."""

import contextlib
import io
import os
import re


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  with open(os.path.join(ROOT, "README.md")) as f:
    return f.read()


def _example_block(text, index=0):
  section = text.split("## Using drojax from another JAX project", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) > index, "the README lost its Python example"
  return blocks[index]


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


def test_readme_nnx_example_runs():
  code = _example_block(_readme(), 1)
  assert "from flax import nnx" in code
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_nnx_example"})  # noqa: S102
  printed = out.getvalue()
  objectives = [float(v) for v in re.findall(r"NNX W-DRO objective: ([0-9.eE+-]+)", printed)]
  robust = float(re.search(r"NNX robust accuracy: ([0-9.eE+-]+)", printed).group(1))
  # Three W-DRO steps at lr 0.1 on a fixed batch lower the objective; accuracy is a fraction.
  assert len(objectives) == 3 and objectives[2] < objectives[0]
  assert 0.0 <= robust <= 1.0


def test_readme_suite_example_runs():
  """The five-line suite example, on a small Flax CNN with its own variables and images."""
  import flax.linen as nn
  import jax
  import numpy as np

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3, 3), strides=(2, 2))(x))
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  section = _readme().split("### Evaluating any Flax model with the attack suite", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  assert len(code.strip().splitlines()) <= 5
  model = Net()
  x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  y = np.array(jax.numpy.argmax(model.apply(variables, x), -1))  # clean accuracy 1
  y[:2] = (y[:2] + 1) % 10  # two images misclassified
  out = io.StringIO()
  namespace = {"__name__": "readme_suite", "model": model, "variables": variables, "x": x, "y": y}
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
  acc = namespace["acc"]
  assert list(acc) == ["clean", "apgd_ce", "apgd_t", "fab_t", "square", "robust"]
  assert float(acc["clean"]) == 0.75
  vals = [float(acc[k]) for k in ("clean", "apgd_ce", "apgd_t", "fab_t", "square")]
  assert vals == sorted(vals, reverse=True)  # cumulative: never increases
  assert "'robust':" in out.getvalue()


def test_readme_keeps_the_two_setup_commands():
  text = _readme()
  assert ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m "
          "experiments.cifar_c --method=dro_augmix --preset=quick --dataset=digits "
          "--workdir=runs/quick_dro_augmix") in text
  assert ".venv/bin/python -m pytest -n 2 tests" in text
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = f.read()
  # Both ends (each venv's python) run the README's command.
  assert ci.count('"$venv/bin/python" -m pytest -n 2 tests') == 1 and "run_end low" in ci \
      and "run_end high" in ci
