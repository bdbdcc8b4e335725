"""Tests for the experiment CLIs' plumbing: overrides, validation, workdir checks, exit codes."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments import cli, pareto, runner
from experiments.configs import cifar_c as cifar_c_config
from experiments.configs import fashion_mnist_pgd as fm_config
from experiments.configs import waterbirds as wb_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- overrides

def test_split_config_overrides_both_spellings():
  rest, ov = cli.split_config_overrides(
      ["prog", "--config.num_epochs=3", "--method=erm", "--config.eval.images", "50"])
  assert rest == ["prog", "--method=erm"]
  assert ov == [("num_epochs", "3"), ("eval.images", "50")]


def test_apply_overrides_parses_by_field_type():
  c = cifar_c_config.make_config("erm", preset="quick", dataset="digits")
  cli.apply_overrides(c, [("num_epochs", "2"), ("method_config.rho", "0.25"),
                          ("nesterov", "false"), ("eval.severities", "1,5"),
                          ("eval.adv_eps", "(0.01,)"), ("model", "small_cnn")])
  assert c.num_epochs == 2 and isinstance(c.num_epochs, int)
  assert c.method_config.rho == 0.25 and c.nesterov is False
  assert tuple(c.eval.severities) == (1, 5) and tuple(c.eval.adv_eps) == (0.01,)
  assert c.model == "small_cnn"


@pytest.mark.parametrize("override, match", [
    (("num_epoch", "3"), "Did you mean 'num_epochs'"),
    (("method_config.rh0", "1"), "Did you mean 'rho'"),
    (("num_epochs", "three"), "expects an integer"),
    (("eval", "1"), "is a group"),
    (("nesterov", "maybe"), "true/false"),
])
def test_apply_overrides_errors(override, match):
  c = cifar_c_config.make_config("erm", preset="quick", dataset="digits")
  with pytest.raises(cli.UsageError, match=match):
    cli.apply_overrides(c, [override])


def test_configs_are_locked_and_carry_the_recipes():
  paper = cifar_c_config.get_config("dro_augmix")
  assert (paper.num_epochs, paper.batch_size, paper.learning_rate, paper.weight_decay) == (
      200, 128, 0.1, 5e-4)
  assert paper.nesterov and paper.lr_schedule == "cosine" and paper.width == 64
  with pytest.raises(AttributeError):
    paper.nmu_epochs = 3  # locked
  quick = cifar_c_config.get_config("dro_augmix,quick,digits")
  assert quick.width < paper.width and quick.num_epochs < paper.num_epochs
  fm = fm_config.get_config("dro")
  assert tuple(fm.eval.adv_eps) == (4 / 255, 8 / 255, 16 / 255) and fm.eval.pgd_steps == 20
  assert fm.method_config.rho == 0.08
  wb = wb_config.get_config("var_dro")
  assert wb.eval.groups and (wb.learning_rate, wb.weight_decay) == (1e-3, 1e-4)


# ---------------------------------------------------------------- validation

def _quick(**fields):
  c = cifar_c_config.make_config("erm", preset="quick", dataset="digits")
  cli.apply_overrides(c, [(k, str(v)) for k, v in fields.items()])
  return c


@pytest.mark.parametrize("fields, devices, match", [
    (dict(), 1, None),
    ({"method_config.rho": -1.0}, 1, "rho must be >= 0"),
    ({"batch_size": 6}, 4, "not divisible by the 4 devices"),
    ({"num_epochs": 0}, 1, "num_epochs must be >= 1"),
    ({"eval.severities": "0,6"}, 1, "severities"),
    ({"model": "resnet"}, 1, "unknown model"),
    ({"method_config.penalty_mode": "forward_over_reverse"}, 1, None),
    ({"method_config.penalty_mode": "finite_diff"}, 1,
     "unknown method_config.penalty_mode 'finite_diff'.*Did you mean 'finite_difference'"),
    ({"method_config.penalty_subsample": 0.0}, 1, r"penalty_subsample must be in \(0, 1\]"),
])
def test_validate(fields, devices, match):
  c = _quick(**fields)
  if match is None:
    runner.validate(c, num_devices=devices)
  else:
    with pytest.raises(cli.UsageError, match=match):
      runner.validate(c, num_devices=devices)


def test_validate_unknown_method_lists_valid_ones():
  c = cifar_c_config.make_config("dro_augmx", preset="quick", dataset="digits")
  with pytest.raises(cli.UsageError, match="Did you mean 'dro_augmix'"):
    runner.validate(c, num_devices=1)


# ---------------------------------------------------------------- workdir

def test_prepare_workdir_resumes_same_config_and_refuses_another(tmp_path):
  c = _quick()
  assert cli.prepare_workdir(str(tmp_path), c) is False
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["method"] == "erm" and saved["method_config"]["rho"] == c.method_config.rho
  assert cli.prepare_workdir(str(tmp_path), _quick(data_dir="/elsewhere")) is True  # run-only
  with pytest.raises(cli.UsageError, match=r"different config \(method_config.rho: 1.0 -> 2.0"):
    cli.prepare_workdir(str(tmp_path), _quick(**{"method_config.rho": 2.0}))


# ---------------------------------------------------------------- sweep helpers

def _pareto_brute(points):
  """Independent: scan by decreasing x (ties: decreasing y), keep points beating the best y."""
  order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
  best_y, keep = -float("inf"), []
  for i in order:
    if points[i][1] > best_y:
      keep.append(i)
      best_y = points[i][1]
  return sorted(keep, key=lambda i: points[i][0])


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_a_scan(seed):
  import numpy as np

  pts = [tuple(p) for p in np.random.default_rng(seed).random((9, 2)).round(6)]
  assert pareto.pareto_front(pts) == _pareto_brute(pts)


# ---------------------------------------------------------------- the real entry point

def _run_cli(args, env_extra=None, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.parametrize("args, match", [
    (["--method=nope", "--dataset=digits"], "unknown method 'nope'"),
    (["--method=erm", "--dataset=cifar1O"], "Did you mean 'cifar10'"),
    (["--method=erm", "--dataset=digits", "--config.method_config.rho=-1"], "rho must be >= 0"),
    (["--method=erm", "--dataset=digits", "--config.num_epoch=1"], "Did you mean 'num_epochs'"),
    (["--method=erm", "--dataset=digits", "--preset=fast"], "unknown --preset 'fast'"),
    (["--method=erm", "--dataset=digits", "--nosuchflag"], "nosuchflag"),
])
def test_cifar_c_bad_flags_exit_2_with_one_line(tmp_path, args, match):
  proc = _run_cli(["experiments.cifar_c", f"--workdir={tmp_path / 'w'}",
                   "--compilation_cache_dir=none", *args])
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "Traceback" not in proc.stderr and match in lines[0]


def test_batch_not_divisible_by_devices_and_missing_data_exit_2(tmp_path):
  proc = _run_cli(["experiments.cifar_c", "--method=erm", "--dataset=digits", "--preset=quick",
                   f"--workdir={tmp_path / 'a'}", "--config.batch_size=63",
                   "--compilation_cache_dir=none"],
                  env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert proc.returncode == 2 and "not divisible by the 2 devices" in proc.stderr
  proc = _run_cli(["experiments.cifar_c", "--method=erm", "--dataset=cifar100", "--preset=quick",
                   f"--workdir={tmp_path / 'b'}", f"--data_dir={tmp_path / 'empty'}",
                   "--compilation_cache_dir=none"], cwd=str(tmp_path))
  assert proc.returncode == 2, proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert "dataset 'cifar100' not found" in proc.stderr and "--data_dir" in proc.stderr
