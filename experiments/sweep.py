r"""A rho (or eps_max) sweep over one method, and a clean-vs-corrupted Pareto plot.

  python -m experiments.sweep --method=dro_augmix --param=rho --values=0,0.3,1,3 \
      --dataset=cifar10 --workdir=runs/sweep_rho
  python -m experiments.sweep --method=var_dro --param=eps_max --values=0,0.5,1,2 \
      --preset=quick --dataset=digits --workdir=runs/sweep_eps

Each value trains into ``WORKDIR/<param>_<value>``; ``WORKDIR/sweep.json``, ``sweep.md`` and
``pareto.png`` (clean accuracy vs mean corruption accuracy, the Pareto-optimal runs joined)
summarise them, and ``WORKDIR/comparison.*`` compares the runs.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import flags

from experiments import cli, flag_defs, multi
from experiments.formatting import md_table, pct
from experiments.overrides import apply_overrides
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config

FLAGS = flags.FLAGS

PARAMS = {"rho": "rho", "eps_max": "var_dro_eps_max", "trades_beta": "trades_beta",
          "mart_beta": "mart_beta", "adv_eps": "adv_eps"}


def parse_values(text: str, param: str = "rho") -> list[float]:
  values = []
  for item in multi.parse_list(text, "--values"):
    try:
      v = float(item)
    except ValueError:
      raise cli.UsageError(f"--values must be numbers, got {item!r}") from None
    if not v >= 0:  # NaN too
      raise cli.UsageError(f"--values must be >= 0 (a {param} of {item} is not allowed)")
    values.append(v)
  return values


def summarize(root: str, param: str, values: Sequence[float], workdirs: Sequence[str]) -> dict:
  """Writes ``sweep.json``, ``sweep.md`` and ``pareto.png`` under ``root``."""
  from experiments import reporting

  rows = []
  for v, w in zip(values, workdirs):
    r = reporting.read_results(w)
    rows.append({param: v, "workdir": w, "clean_accuracy": r.get("clean_accuracy"),
                 "mean_corruption_accuracy": r.get("mean_corruption_accuracy"),
                 "worst_group_accuracy": (r.get("group_accuracy") or {}).get("worst_group"),
                 "train_seconds": r.get("train_seconds")})
  pts = [(r["clean_accuracy"] or 0.0, r["mean_corruption_accuracy"] or 0.0) for r in rows]
  front = reporting.pareto_front(pts)
  for i, r in enumerate(rows):
    r["pareto_optimal"] = i in front
  summary = {"param": param, "runs": rows}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(summary, f, indent=2)
  columns = {"clean_accuracy": "clean accuracy",
             "mean_corruption_accuracy": "mean corruption accuracy"}
  if any(r["worst_group_accuracy"] is not None for r in rows):  # group-shift data
    columns["worst_group_accuracy"] = "worst-group accuracy"
  table = md_table([param, *columns.values(), "train s", "Pareto"],
                   [[f"{r[param]:g}", *(pct(r[k], sign="%", missing="n/a") for k in columns),
                     f"{r['train_seconds'] or 0:.0f}", "yes" if r["pareto_optimal"] else ""]
                    for r in rows])
  with open(os.path.join(root, "sweep.md"), "w") as f:
    f.write(f"# Sweep of {param}\n\n" + "\n".join(table) + "\n")
  reporting.scatter_plot([(f"{param}={r[param]:g}", 100 * x, None, 100 * y, None)
                          for (x, y), r in zip(pts, rows)], os.path.join(root, "pareto.png"),
                         xlabel="clean accuracy (%)", ylabel="mean corruption accuracy (%)",
                         title=f"{param} sweep: clean vs mean corruption accuracy (axes zoomed)",
                         front=True, annotate=True)
  return summary


def build_configs(overrides) -> tuple[list[float], list]:
  flag_defs.check_choice(FLAGS.param, list(PARAMS), "--param")
  flag_defs.check_run_flags()
  values = parse_values(FLAGS.values, FLAGS.param)
  configs = []
  for v in values:
    config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset)
    flag_defs.set_run_fields(apply_overrides(config, overrides))
    with config.unlocked():
      config.method_config[PARAMS[FLAGS.param]] = v
    reason = common.not_applying(config, "method_config." + PARAMS[FLAGS.param])
    if reason:  # e.g. rho for var_dro: every run would train the same model
      raise cli.UsageError(f"--param={FLAGS.param} has no effect: {reason}")
    configs.append((f"{FLAGS.param}_{v:g}", config))
  return values, configs


@flag_defs.uses("method", "dataset", "preset", "workdir", "data_dir", "compilation_cache_dir",
                own={"param": ("string", "rho", "rho (W-DRO penalty weight) | eps_max (Var-DRO "
                               "radius) | trades_beta | mart_beta | adv_eps (adversarial "
                               "training)."),
                     "values": ("string", "0,0.3,1,3", "Comma-separated non-negative values.")})
def main(argv, overrides):
  del argv
  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  values, configs = build_configs(overrides)
  workdirs = multi.run_all(configs, FLAGS.workdir)
  import jax

  if jax.process_index() == 0:
    summarize(FLAGS.workdir, FLAGS.param, values, workdirs)
    print(f"sweep: {os.path.join(FLAGS.workdir, 'sweep.md')}, "
          f"{os.path.join(FLAGS.workdir, 'pareto.png')}")


if __name__ == "__main__":
  cli.run_main(main, help_config=lambda: build_configs([])[1][0][1])
