"""Tests for the experiment CLIs' plumbing: overrides, validation, workdir checks, exit codes."""

import errno
import json
import os
import subprocess
import sys

import pytest

from drojax.specs import flatten
from experiments import cli, reporting
from experiments.overrides import apply_overrides, check_overrides_apply, split_config_overrides
from experiments import train as xtrain
from experiments import workdir as workdir_lib
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config
from experiments.configs import fashion_mnist_pgd as fm_config
from experiments.configs import waterbirds as wb_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- overrides

def test_split_config_overrides_both_spellings():
  rest, ov = split_config_overrides(
      ["prog", "--config.num_epochs=3", "--method=erm", "--config.eval.images", "50"])
  assert rest == ["prog", "--method=erm"]
  assert ov == [("num_epochs", "3"), ("eval.images", "50")]


def test_apply_overrides_parses_by_field_type():
  c = cifar_c_config.make_config("erm", preset="quick", dataset="digits")
  apply_overrides(c, [("num_epochs", "2"), ("method_config.rho", "0.25"),
                          ("nesterov", "false"), ("eval.severities", "1,5"),
                          ("eval.adv_eps", "(0.01,)"), ("model", "small_cnn")],
                      check_applies=False)
  assert c.num_epochs == 2 and isinstance(c.num_epochs, int)
  assert c.method_config.rho == 0.25 and c.nesterov is False
  assert tuple(c.eval.severities) == (1, 5) and tuple(c.eval.adv_eps) == (0.01,)
  assert c.model == "small_cnn"


@pytest.mark.parametrize("field, text, expected", [
    ("eval.adv_eps", "8/255", (8 / 255,)),
    ("eval.adv_eps", "2/255,8/255", (2 / 255, 8 / 255)),
    ("eval.adv_eps", "[0.5, 1]", (0.5, 1.0)),
    ("eval.adv_eps", "", ()),
    ("eval.corruption_names", "('fog', 'snow')", ("fog", "snow")),
    ("method_config.adv_eps", "8/255", 8 / 255),
    ("method_config.var_dro_eps_max", "inf", float("inf")),
    ("learning_rate", "1e-3", 1e-3),
])
def test_overrides_parse_by_declared_type(field, text, expected):
  # The declared spec, not the current value, decides: waterbirds' adv_eps is () yet parses
  # "8/255" as a tuple of numbers (before issue 15 it became ('8/255',) and crashed later).
  c = wb_config.make_config("erm", preset="quick")
  if field.startswith("method_config.") and field.split(".")[1] not in c.method_config:
    pytest.skip(f"{field} not in this MethodConfig")
  apply_overrides(c, [(field, text)], check_applies=False)
  node = c
  for part in field.split("."):
    node = node[part]
  assert (tuple(node) if isinstance(expected, tuple) else node) == pytest.approx(expected)


@pytest.mark.parametrize("override, match", [
    (("num_epoch", "3"), "Did you mean 'num_epochs'"),
    (("method_config.rh0", "1"), "Did you mean 'rho'"),
    (("num_epochs", "three"), "expected an integer"),
    (("eval", "1"), "is a group"),
    (("nesterov", "maybe"), "true/false"),
])
def test_apply_overrides_errors(override, match):
  c = cifar_c_config.make_config("erm", preset="quick", dataset="digits")
  with pytest.raises(cli.UsageError, match=match):
    apply_overrides(c, [override])


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


def test_quick_preset_on_digits_evaluates_the_whole_test_split():
  from sklearn.datasets import load_digits

  c = cifar_c_config.make_config("dro_augmix", preset="quick", dataset="digits")
  train, test = xtrain.load_data(c, data_dir=None, download=False)
  assert len(train) + len(test) == len(load_digits().target)  # sklearn's 1,797: nothing left out
  assert len(test) == 359 and c.eval.batch_size >= len(test)  # one evaluation batch
  cifar = cifar_c_config.make_config("dro_augmix", preset="quick", dataset="cifar10")
  assert (cifar.eval.images, cifar.eval.batch_size) == (200, 200)  # a subset of the 10,000


# ---------------------------------------------------------------- validation

def _quick(method="erm", **overrides):
  c = cifar_c_config.make_config(method, preset="quick", dataset="digits")
  apply_overrides(c, [(k, str(v)) for k, v in overrides.items()], check_applies=False)
  return c


@pytest.mark.parametrize("fields, devices, match", [
    (dict(), 1, None),
    ({"method_config.rho": -1.0}, 1, "method_config.rho: expected a finite number >= 0"),
    ({"batch_size": 6}, 4, "not divisible by the 4 devices"),
    ({"num_epochs": 0}, 1, "num_epochs: expected an integer >= 1"),
    ({"eval.severities": "0,6"}, 1, "severities"),
    ({"model": "resnet"}, 1, "model: unknown value 'resnet'"),
    ({"method_config.penalty_mode": "forward_over_reverse"}, 1, None),
    ({"method_config.penalty_mode": "finite_diff"}, 1,
     "penalty_mode: unknown value 'finite_diff'.*Did you mean 'finite_difference'"),
    ({"method_config.penalty_subsample": 0.0}, 1, r"penalty_subsample: expected .*> 0 and <= 1"),
    ({"eval.attack": "suite"}, 1, None),
    ({"eval.attack": "autoattack"}, 1, "eval.attack: unknown value 'autoattack'"),
    ({"eval.attack": "suite", "eval.square_queries": 0}, 1,
     "eval.square_queries: expected an integer >= 1"),
    ({"eval.attack": "suite", "eval.norm": "l2", "eval.adv_eps": "0.5,1.5"}, 1, None),
    ({"eval.norm": "l1"}, 1, "eval.norm: unknown value 'l1'"),
    ({"eval.adv_eps": "0.5,1.5"}, 1, "eval.adv_eps: must be <= 1 with eval.norm=linf"),
])
def test_validate(fields, devices, match):
  c = _quick(**fields)
  if match is None:
    xtrain.validate(c, num_devices=devices)
  else:
    with pytest.raises(cli.UsageError, match=match):
      xtrain.validate(c, num_devices=devices)


def test_validate_unknown_method_lists_valid_ones():
  c = cifar_c_config.make_config("dro_augmx", preset="quick", dataset="digits")
  with pytest.raises(cli.UsageError, match="Did you mean 'dro_augmix'"):
    xtrain.validate(c, num_devices=1)


@pytest.mark.parametrize("make", [
    lambda m: cifar_c_config.make_config(m, preset="paper", dataset="cifar10"),
    lambda m: cifar_c_config.make_config(m, preset="quick", dataset="digits"),
    lambda m: fm_config.make_config(m, preset="paper"),
    lambda m: wb_config.make_config(m, preset="quick"),
], ids=["cifar_c_paper", "cifar_c_quick", "fashion_mnist_pgd", "waterbirds"])
def test_every_preset_of_every_method_validates(make):
  from drojax.methods import method_names

  for method in method_names():
    c = make(method)
    xtrain.validate(c, num_devices=1)
    # And every field of it has a declared check (a new field must come with one).
    specs = common.config_specs(c)
    assert set(flatten(c)) <= set(specs), set(flatten(c)) - set(specs)


def test_every_method_config_field_has_a_spec_and_a_method_that_reads_it():
  from drojax import methods

  names = set(methods.field_defaults())
  specs = common.config_specs(cifar_c_config.make_config("erm"))
  assert {f"method_config.{n}" for n in names} <= set(specs)
  read = set()
  for method in methods.method_names():
    got = methods.fields_read(method)
    assert set(got) <= names, set(got) - names
    read |= set(got)
  assert names - read == set(), f"fields no method reads: {names - read}"


def test_an_unchecked_field_is_an_error():
  c = _quick()
  with c.unlocked():
    c.mystery = 3
  with pytest.raises(cli.UsageError, match="mystery: no check is declared"):
    xtrain.validate(c, num_devices=1)


def test_not_applying_fields():
  assert common.not_applying(_quick("var_dro"), "method_config.rho").startswith(
      "method 'var_dro' does not read it")
  assert common.not_applying(_quick("dro_augmix"), "method_config.rho") is None
  assert common.not_applying(_quick("dro_augmix"), "method_config.augmix_width") is None
  assert common.not_applying(_quick("mixup"), "method_config.augmix_width") is not None
  assert common.not_applying(_quick(optimizer="adam"), "nesterov") is not None
  assert common.not_applying(_quick(), "nesterov") is None
  # Across methods (multi-method CLIs): an error only when no method reads the field.
  configs = [_quick("erm"), _quick("dro")]
  check_overrides_apply(configs, [("method_config.rho", "1")])
  with pytest.raises(cli.UsageError, match="has no effect for any of the methods"):
    check_overrides_apply(configs, [("method_config.cvar_alpha", "0.3")])


# ---------------------------------------------------------------- workdir

def test_prepare_workdir_resumes_same_config_and_refuses_another(tmp_path):
  c = _quick()
  assert workdir_lib.prepare_workdir(str(tmp_path), c) is False
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["method"] == "erm" and saved["method_config"]["rho"] == c.method_config.rho
  # A run-only field may differ.
  assert workdir_lib.prepare_workdir(str(tmp_path), _quick(data_dir="/elsewhere")) is True
  rho = c.method_config.rho
  with pytest.raises(cli.UsageError, match=rf"different config \(method_config.rho: {rho} -> 2.0"):
    workdir_lib.prepare_workdir(str(tmp_path), _quick(**{"method_config.rho": 2.0}))


def test_prepare_workdir_disk_full_leaves_no_config(tmp_path, monkeypatch):
  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(json, "dump", full)
  with pytest.raises(cli.EnvironmentFault, match=r"disk full"):
    workdir_lib.prepare_workdir(str(tmp_path / "w"), _quick())
  assert os.listdir(tmp_path / "w") == []  # neither config.json nor its .tmp


def test_compilation_cache_that_cannot_be_made_warns_in_one_line(tmp_path, capsys):
  from experiments import launch

  blocker = tmp_path / "file"
  blocker.write_text("")  # a file where the cache folder's parent should be
  assert launch.enable_compilation_cache(str(blocker / "jax")) is None
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(blocker / "jax") in err[0] and "not a directory" in err[0]


def test_os_errors_in_a_cause_chain_are_found():
  try:
    try:
      raise OSError(errno.EROFS, "Read-only file system", "/x/metrics.jsonl")
    except OSError as e:
      raise RuntimeError("wrapped") from e
  except RuntimeError as e:
    found = cli._os_error_in_chain(e)
  assert found is not None and found.filename == "/x/metrics.jsonl"
  assert cli._os_error_in_chain(RuntimeError("a bug")) is None


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
  assert reporting.pareto_front(pts) == _pareto_brute(pts)


# ---------------------------------------------------------------- the bad-input table

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_bad_inputs import CASES, REACHES  # noqa: E402


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  """Runs every case of the table in one separate interpreter (see tests/cli_bad_inputs.py)."""
  root = tmp_path_factory.mktemp("cli_table")
  out = root / "rows.json"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("DROJAX_DISTRIBUTED", None)
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cli_bad_inputs.py"),
                         str(root), str(out)], cwd=str(root), env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {row["id"]: row for row in json.loads(out.read_text())}


def test_the_table_is_large_enough():
  assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case_id, code, phrase", [(c[0], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_cli_bad_input(table, case_id, code, phrase):
  row = table[case_id]
  lines = row["stderr"].strip().splitlines()
  assert row["code"] == code, row
  assert len(lines) == 1 and "Traceback" not in row["stderr"], row["stderr"]
  assert phrase in lines[0], lines[0]
  assert not row["config_json"], "a failed start wrote config.json"
  assert not [f for f in row["leftovers"] if f.endswith(".tmp")], row["leftovers"]


@pytest.mark.parametrize("case_id", [c[0] for c in REACHES])
def test_documented_inputs_reach_training(table, case_id):
  # A single-channel npz is documented as accepted: it loads as RGB and the model initialises
  # (before issue 15 it failed in model init: "mean/std must have 1 or 1 entries").
  row = table[case_id]
  assert str(row["code"]).startswith("reached training"), row
  assert row["config_json"]  # a valid start writes its config


# ---------------------------------------------------------------- the real entry point

def _run_cli(args, env_extra=None, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.parametrize("args, code, match", [
    # The real interpreter: one line, no traceback, the exit status.
    (["experiments.cifar_c", "--method=erm", "--dataset=digits", "--config.seed=-1"], 2,
     "--config.seed: expected an integer >= 0"),
    (["experiments.sweep", "--method=var_dro", "--param=rho", "--values=0,1",
      "--dataset=digits", "--preset=quick"], 2,
     "--param=rho has no effect: method 'var_dro' does not read it"),
    (["experiments.fashion_mnist_pgd", "--methods=erm,mixup", "--dataset=digits",
      "--preset=quick", "--config.method_config.rho=0.5"], 2,
     "--config.method_config.rho has no effect for any of the methods"),
    (["experiments.waterbirds", "--methods=erm", "--preset=quick",
      "--config.image_size=4"], 2, "--config.image_size: expected an integer >= 8"),
])
def test_cli_processes_exit_with_one_line(tmp_path, args, code, match):
  proc = _run_cli([*args, f"--workdir={tmp_path / 'w'}", "--compilation_cache_dir=none"])
  assert proc.returncode == code, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert match in lines[0], lines[0]
  assert not (tmp_path / "w").exists()


def test_verbose_shows_the_traceback_and_still_ends_with_the_line(tmp_path):
  proc = _run_cli(["experiments.cifar_c", "--method=erm", "--dataset=digits", "--verbose",
                   "--config.lr_schedule=cos", f"--workdir={tmp_path / 'w'}"])
  assert proc.returncode == 2
  assert "Traceback" in proc.stderr
  assert "Did you mean 'cosine'" in proc.stderr.strip().splitlines()[-1]


_ONE_PROCESS = r"""
import contextlib, io, json
from absl import flags
from experiments import (calibrate_severities, cifar_c, cli, compare, fashion_mnist_pgd,
                         group_shift, reproduce, robustness_study, sweep, waterbirds)
rows = []
for name, main in (("waterbirds", waterbirds.main), ("fashion_mnist_pgd", fashion_mnist_pgd.main),
                   ("cifar_c", cifar_c.main), ("sweep", sweep.main), ("compare", compare.main),
                   ("reproduce", reproduce.main), ("waterbirds", waterbirds.main)):
  err = io.StringIO()
  try:
    with contextlib.redirect_stderr(err):
      cli.run_main(main, [name, "--workdir="] if name != "compare" else [name])
  except SystemExit as e:
    rows.append([name, e.code, err.getvalue().strip(),
                 flags.FLAGS["methods"].value if "methods" in flags.FLAGS else None])
print(json.dumps(rows))
"""


def test_every_cli_module_in_one_process_defines_its_flags_when_it_runs():
  """All CLI modules imported together (no flag is defined at import), then several CLIs run
  one after the other: each gets its own flags and defaults, none collides."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _ONE_PROCESS], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(proc.stdout.strip().splitlines()[-1])
  assert [r[1] for r in rows] == [2] * 7, rows
  assert rows[0][2:] == ["waterbirds: error: --workdir is required", "erm,kl_dro,var_dro"]
  assert rows[1][2:] == ["fashion_mnist_pgd: error: --workdir is required", "erm,dro"]
  assert rows[2][2] == "cifar_c: error: --workdir is required"
  assert rows[3][2] == "sweep: error: --workdir is required"
  assert rows[4][2].startswith("compare: error: --workdirs needs at least one value"), rows[4]
  assert rows[5][2] == "reproduce: error: --root is required", rows[5]
  assert rows[6][2:] == rows[0][2:]  # a second run of the same CLI: its defaults again
