"""``--help``, ``-h`` and ``--helpfull`` of every experiment CLI: exit 0, a usage line, the CLI's
flags with their help and defaults, and for the CLIs that take ``--config.*`` every method with
its description, the datasets, the presets and every config field with its type and default,
generated from the specs validation uses (a field without a spec fails here too)."""

import os
import subprocess
import sys

import pytest

from drojax import methods
from drojax.data import registry
from drojax.specs import flatten
from experiments import help as help_text
from experiments.configs import cifar_c as cifar_c_config
from experiments.configs import common
from experiments.configs import fashion_mnist_pgd as fm_config
from experiments.configs import group_shift as gs_config
from experiments.configs import waterbirds as wb_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every module of experiments/ with a main, and the config its --help describes (None: the CLI
# takes no --config.*).
CLIS = {
    "cifar_c": lambda: cifar_c_config.make_config("dro_augmix"),
    "fashion_mnist_pgd": lambda: fm_config.make_config("erm", dataset="fashion_mnist"),
    "waterbirds": lambda: wb_config.make_config("erm"),
    "sweep": lambda: cifar_c_config.make_config("dro_augmix"),
    "group_shift": lambda: gs_config.make_config("erm"),
    "compare": None,
    "reproduce": None,
    "robustness_study": None,
    "calibrate_severities": None,
    "colored_mnist_recipe": None,
}


def test_every_cli_is_listed():
  mains = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                 if f.endswith(".py") and "cli.run_main(main" in
                 open(os.path.join(ROOT, "experiments", f)).read().replace("_cli.", "cli."))
  assert mains == sorted(CLIS)


def _help_outputs():
  """``{(cli, flag): CompletedProcess}``, the processes started together."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  runs = [(name, "--help") for name in CLIS] + [("cifar_c", "-h"), ("cifar_c", "--helpfull")]
  procs = {run: subprocess.Popen([sys.executable, "-m", f"experiments.{run[0]}", run[1]],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for run in runs}
  out = {}
  for run, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    out[run] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
  return out


def _check_help(proc, name):
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  text = proc.stdout
  assert text.startswith(f"USAGE: python -m experiments.{name} [flags]"), text[:300]
  flag_lines = text[text.index("\nflags:\n"):]
  assert "(default:" in flag_lines and "--" in flag_lines
  make = CLIS[name]
  if make is None:
    assert "--config." not in text
    return
  for method in methods.method_names():
    description = methods.get_method(method).description
    assert f"\n  {method}: " in text, method
    assert " ".join(description.split()[:3]) in " ".join(text.split()), (method, description)
  for dataset in registry.DATASETS:
    assert dataset in text.split("datasets (--dataset):")[1].split("\n")[0]
  for preset in common.PRESETS:
    assert preset in text.split("presets (--preset):")[1].split("\n")[0]
  config = make()
  specs = common.config_specs(config)
  joined = " ".join(text.split())
  for path in flatten(config):
    line = f"--config.{path}: {specs[path].describe()}; default: "
    assert " ".join(line.split()) in joined, (name, path)


@pytest.mark.slow
def test_every_cli_answers_help_h_and_helpfull():
  """One test, so that the 11 processes run once (not once per xdist worker)."""
  outputs = _help_outputs()
  for name in sorted(CLIS):
    _check_help(outputs[(name, "--help")], name)
  short, full = outputs[("cifar_c", "-h")], outputs[("cifar_c", "--helpfull")]
  assert short.returncode == 0 and full.returncode == 0, short.stderr + full.stderr
  assert short.stdout == outputs[("cifar_c", "--help")].stdout
  assert "--flagfile" in full.stdout and "--flagfile" not in short.stdout
  assert "--config.num_epochs: " in full.stdout


def test_a_field_without_a_spec_fails_the_help():
  config = cifar_c_config.make_config("erm")
  with config.unlocked():
    config.eval.undeclared = 3
  with pytest.raises(KeyError, match="eval.undeclared"):
    help_text.config_text(config)


def test_help_is_requested_only_before_a_double_dash():
  assert help_text.requested(["prog", "--method=erm", "-h"]) == "short"
  assert help_text.requested(["prog", "--helpfull"]) == "full"
  assert help_text.requested(["prog", "--", "--help"]) is None
  assert help_text.requested(["--help"]) is None  # argv[0] is the program
