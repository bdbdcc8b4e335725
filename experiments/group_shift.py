r"""The group-shift study: methods x hyper-parameters x seeds, selected on validation only.

  python -m experiments.group_shift --benchmark=colored_digits --preset=quick \
      --methods=erm,kl_dro,cvar,var_dro,group_dro,jtt,vrex,irm,var_dro_vrex --seeds=0,1,2 \
      --workdir=runs/group_shift/colored_digits

Each (method, hyper-parameter value, seed) trains into ``WORKDIR/<method>/<value>/seed_<s>``
(re-running the command skips finished runs and resumes an interrupted one from its checkpoint).
Every run records its test group accuracy and its ``validation`` accuracy and group accuracy
(the benchmark's validation split). Per method and selection rule, the hyper-parameter value with
the best mean validation score over the seeds is chosen:

* ``worst_group``: worst-group validation accuracy (group labels on validation only);
* ``average``: validation accuracy (no group label anywhere: label-free methods).

``WORKDIR/group_shift.json`` and ``group_shift.md`` report, per method and rule, the chosen
value, the test worst-group and average accuracy (mean and 95 % t-interval over the seeds) and
the training time. ``--grid=none`` runs each method's preset value only. The scheduler
(``--workers``, ``--shard``, ``--retry_failed``, ``--report_only``) is the study framework's
(``experiments.studies``).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from absl import flags

from drojax import groups as group_rules, methods
from experiments import cli, flag_defs, groups, multi, studies
from experiments.configs import common
from experiments.configs import group_shift as gs_config
from experiments.formatting import ci_cell, md_table, mean_ci

FLAGS = flags.FLAGS

# The hyper-parameter each method is tuned over (on validation), and its values.
GRID: dict[str, tuple[str, tuple[float, ...]]] = {
    "kl_dro": ("kl_temperature", (1.0, 10.0)),
    "cvar": ("cvar_alpha", (0.1, 0.5)),
    "var_dro": ("var_dro_eps_max", (0.5, 2.0)),
    "group_dro": ("group_dro_step_size", (0.01, 0.1)),
    "vrex": ("vrex_penalty_weight", (1e2, 1e4)),
    "irm": ("irm_penalty_weight", (1e2, 1e4)),
    "var_dro_vrex": ("vrex_penalty_weight", (1e2, 1e4)),
    "jtt": ("jtt_lambda_up", (6.0, 20.0)),
}


# Where the penalty weight jumps from 1 to its value, as a fraction of the training steps:
# Arjovsky et al.'s and Krueger et al.'s Colored MNIST code anneal at step 190 of 501.
PENALTY_ANNEAL_FRACTION = 190 / 501


def anneal_steps(num_train: int, config) -> int:
  """The step at which ``config``'s penalty weight takes its value: the papers' 190 / 501 of
  the run's ``num_epochs * (num_train // batch_size)`` steps."""
  if config.train_subset:
    num_train = min(num_train, config.train_subset)
  return round(PENALTY_ANNEAL_FRACTION * config.num_epochs * (num_train // config.batch_size))


def plan(overrides, num_train: int) -> list[studies.RunSpec]:
  """Every run (method, value, seed), validated; ``num_train`` (the training split's size)
  places the penalty anneal unless ``penalty_anneal_steps`` is overridden."""
  flag_defs.check_choice(FLAGS.benchmark, gs_config.BENCHMARKS, "--benchmark")
  flag_defs.check_choice(FLAGS.preset, common.PRESETS, "--preset")
  flag_defs.check_choice(FLAGS.grid, ("default", "none"), "--grid")
  seeds = studies.parse_seeds(FLAGS.seeds)
  runs = []
  for method, base in multi.method_configs(
      FLAGS.methods, lambda m: gs_config.make_config(m, preset=FLAGS.preset,
                                                     dataset=FLAGS.benchmark), overrides):
    tuned = FLAGS.grid == "default" and method in GRID
    field, values = GRID[method] if tuned else (None, (None,))
    for value in values:
      for seed in seeds:
        config = base.copy_and_resolve_references()  # locked: existing fields only
        config.seed = seed
        if "penalty_anneal_steps" in methods.fields_read(method) and (
            "method_config.penalty_anneal_steps" not in dict(overrides)):
          config.method_config.penalty_anneal_steps = anneal_steps(num_train, config)
        if field is not None:
          config.method_config[field] = value
        label = "preset" if field is None else f"{field}_{value:g}"
        runs.append(studies.RunSpec(method, label, method, seed, config,
                                    layout="{study}/{name}/seed_{seed}"))
  return runs


def select(overrides) -> tuple[None, list[studies.RunSpec], list[str]]:
  """The study framework's hook: the plan, placed by the size of the training split."""
  from drojax import data
  from experiments import train

  flag_defs.check_choice(FLAGS.benchmark, gs_config.BENCHMARKS, "--benchmark")
  data_dir = train.resolve_data_dir(
      FLAGS.data_dir, gs_config.make_config("erm", dataset=FLAGS.benchmark))
  num_train = len(data.load_dataset(FLAGS.benchmark, "train", data_dir=data_dir))
  return None, plan(overrides, num_train), []


@functools.lru_cache(maxsize=1)
def _validation(benchmark: str, data_dir: str | None):
  from drojax import data

  return data.load_dataset(benchmark, "validation", data_dir=data_dir)


def run(spec: studies.RunSpec, root: str, scale, data_dir: str | None, cache: str | None):
  """Trains ``spec`` and scores it on the test and the validation split."""
  del scale
  validation = _validation(spec.config.dataset, data_dir)
  studies.train_run(spec, root, data_dir=data_dir, cache_dir=cache,
                    extra_evaluation=lambda trained, test_ds: groups.validation_results(
                        spec.config, trained, validation))


def _mean_validation(seeds: list[dict]) -> dict[str, Any]:
  """One value's validation accuracy and worst-group accuracy, averaged over its seeds."""
  n = len(seeds)
  return {"accuracy": sum(r["validation"]["accuracy"] for r in seeds) / n,
          "group_accuracy": {"worst_group": sum(r["validation"]["group_accuracy"]["worst_group"]
                                                for r in seeds) / n}}


def summarize(runs: list[tuple[str, str, int, dict]]) -> dict[str, Any]:
  """Per method and selection rule (``drojax.groups.select`` on the mean validation scores):
  the chosen value and its test accuracies over the seeds (``formatting.mean_ci``: the mean and
  its 95 % t-interval half-width, None for one seed)."""
  by_method: dict[str, dict[str, list[dict]]] = {}
  for method, label, _, results in runs:
    by_method.setdefault(method, {}).setdefault(label, []).append(results)
  out = {}
  for method, labels in by_method.items():
    names = list(labels)
    means = [_mean_validation(labels[name]) for name in names]
    out[method] = {}
    for rule in group_rules.SELECTIONS:
      i = group_rules.select(means, rule)
      seeds = labels[names[i]]
      worst = mean_ci([r["group_accuracy"]["worst_group"] for r in seeds])
      average = mean_ci([r["clean_accuracy"] for r in seeds])
      out[method][rule] = {
          "chosen": names[i], "validation_score": group_rules.selection_score(means[i], rule),
          "seeds": len(seeds), "test_worst_group": worst[0], "test_worst_group_ci95": worst[1],
          "test_average": average[0], "test_average_ci95": average[1],
          "train_seconds": mean_ci([r["train_seconds"] for r in seeds])[0]}
  return out


def write(runs: list[studies.RunSpec], root: str, out_dir: str) -> str:
  """The study framework's report hook: the finished runs summarized into ``out_dir``
  (``group_shift.json`` and ``group_shift.md``)."""
  from experiments import reporting

  summary = summarize([(s.method, s.name, s.seed, reporting.read_results(s.workdir(root)))
                       for s in runs if studies.finished(s, root)])
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "group_shift.json"), "w") as f:
    json.dump(summary, f, indent=2)
  rows = [[method, rule, r["chosen"],
           *(ci_cell((r[f"test_{k}"], r[f"test_{k}_ci95"], r["seeds"]), digits=1)
             for k in ("worst_group", "average")), f"{r['train_seconds']:.0f}"]
          for method, rules in summary.items() for rule, r in rules.items()]
  lines = md_table(["method", "selection", "chosen", "test worst-group (%)", "test average (%)",
                    "train s / run"], rows)
  path = os.path.join(out_dir, "group_shift.md")
  with open(path, "w") as f:
    f.write("Mean ± 95 % t-interval half-width over the seeds; the value chosen on the "
            "validation split by the rule.\n\n" + "\n".join(lines) + "\n")
  return path


STUDY = studies.Study(
    module="experiments.group_shift", run=run, select=select, write=write, root_flag="workdir",
    report_dir="", flags={
        "benchmark": ("string", "colored_digits",
                      "colored_digits | colored_fashion_mnist | dominoes | waterbirds"),
        "grid": ("string", "default", "default (each method's GRID) | none (preset only)")})


@flag_defs.uses("methods", "preset", "workdir", "data_dir", "compilation_cache_dir",
                methods="erm,kl_dro,cvar,var_dro,group_dro,jtt,vrex,irm,var_dro_vrex",
                own=studies.flags_of(STUDY))
def main(argv, overrides):
  studies.main(STUDY, argv, overrides)


if __name__ == "__main__":
  cli.run_main(main, help_config=lambda: plan([], num_train=0)[0].config)
