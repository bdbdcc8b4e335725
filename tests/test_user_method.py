"""A user's own method, from docs/architecture.md ("Adding a method"): the module there, loaded
with ``--import``, registers ``focal`` with its own field ``focal_gamma``; the command there
trains it (made tiny), and the field is checked, recorded and refused like a built-in one."""

import json
import os
import re
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.model=tiny", "--config.train_subset=64", "--config.batch_size=32",
        "--config.num_epochs=1", "--config.warmup_epochs=0", "--config.eval.images=32",
        "--config.eval.batch_size=32", "--config.eval.corruption_names=none",
        "--config.eval.adv_eps=()", "--compilation_cache_dir=none"]


def _doc():
  """The user module and the command of docs/architecture.md's "Adding a method"."""
  with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
    text = f.read()
  section = text[text.index("## Adding a method"):]
  module = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  command = re.search(r"```\n(python -m .*?)```", section, re.S).group(1)
  return module, shlex.split(command.replace("\\\n", " "))


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("user")
  (path / "focal.py").write_text(_doc()[0])
  return path


def _run(args, user_dir):
  env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{user_dir}", JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_the_documented_focal_objective_matches_its_formula(user_dir, monkeypatch):
  monkeypatch.syspath_prepend(str(user_dir))
  import focal  # noqa: F401  (registers the method)

  from drojax import methods, objectives

  try:
    ce = np.array([0.05, 0.7, 2.5, 0.0], np.float32)
    model = objectives.ModelFns(loss=lambda x, t: (jnp.asarray(ce), None), logits=None,
                                eval_logits=None)
    method = methods.get_method("focal", methods.MethodConfig(extra={"focal_gamma": 1.5}))
    value, aux, _ = method.objective.apply(jax.random.key(0), None, model, None, None, None)
    c = ce.astype(np.float64)
    np.testing.assert_allclose(value, np.mean((1 - np.exp(-c)) ** 1.5 * c), rtol=1e-6)
    np.testing.assert_allclose(aux.losses, (1 - np.exp(-c)) ** 1.5 * c, rtol=1e-6)
    with pytest.raises(ValueError, match="^gamma must be >= 0"):
      focal.focal(gamma=-1.0)
  finally:
    methods.unregister("focal")
    sys.modules.pop("focal")


@pytest.mark.slow
def test_the_documented_command_trains_the_user_method(user_dir, tmp_path):
  argv = _doc()[1]
  assert argv[:3] == ["python", "-m", "experiments.cifar_c"] and "--import=focal" in argv
  workdir = tmp_path / "run"
  argv = [a if not a.startswith("--workdir=") else f"--workdir={workdir}" for a in argv[1:]]
  proc = _run(argv + TINY, user_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "config.json") as f:
    assert json.load(f)["method_config"]["focal_gamma"] == 1.5  # recorded like a built-in
  with open(workdir / "results.json") as f:
    r = json.load(f)
  assert r["method"] == "focal" and 0.0 <= r["clean_accuracy"] <= 1.0


@pytest.mark.parametrize("args, phrase", [
    (["--method=focal", "--config.method_config.focal_gamma=-1"],
     "--config.method_config.focal_gamma: expected a finite number >= 0, got -1"),
    (["--method=erm", "--config.method_config.focal_gamma=1"],
     "--config.method_config.focal_gamma has no effect: method 'erm' does not read it"),
    (["--method=focal", "--config.method_config.rho=1"],
     "method 'focal' does not read it (it reads label_smoothing, focal_gamma)"),
], ids=["out_of_range", "not_read_by_erm", "builtin_not_read"])
def test_the_user_field_is_checked_like_a_builtin(user_dir, tmp_path, args, phrase):
  proc = _run(["-m", "experiments.cifar_c", "--import=focal", "--preset=quick",
               "--dataset=digits", f"--workdir={tmp_path / 'w'}", *args, *TINY], user_dir)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert phrase in lines[0], lines[0]
  assert not (tmp_path / "w").exists()


def test_import_of_a_missing_module_is_one_line(user_dir, tmp_path):
  proc = _run(["-m", "experiments.cifar_c", "--import=focal,no_such_module", "--method=focal",
               f"--workdir={tmp_path / 'w'}"], user_dir)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip() == ("cifar_c.py: error: --import: no module named 'no_such_module' "
                                 "(a module on PYTHONPATH or in the current directory, e.g. "
                                 "--import=my_methods for my_methods.py)")
