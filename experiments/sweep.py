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

from experiments import cli, multi
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dro_augmix", "The method whose parameter is swept.")
flags.DEFINE_string("param", "rho", "rho (W-DRO penalty weight) | eps_max (Var-DRO radius).")
flags.DEFINE_string("values", "0,0.3,1,3", "Comma-separated non-negative values.")
flags.DEFINE_string("dataset", "cifar10", "cifar10 | cifar100 | digits | fashion_mnist | npz:PATH")
flags.DEFINE_string("preset", "paper", "paper | quick")
flags.DEFINE_string("workdir", None, "Root directory; each value gets a sub-directory.")
flags.DEFINE_string("data_dir", None, "Where to look for data first (default $DROJAX_DATA_DIR).")
flags.DEFINE_string("compilation_cache_dir", None, "JAX compilation cache ('none' off).")

PARAMS = {"rho": "rho", "eps_max": "var_dro_eps_max"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
  """Indices of the points no other point dominates (higher is better in both coordinates),
  sorted by the first coordinate.

  >>> pareto_front([(0.9, 0.5), (0.8, 0.6), (0.7, 0.55), (0.9, 0.4)])
  [1, 0]
  """
  front = []
  for i, (x, y) in enumerate(points):
    dominated = any((a >= x and b >= y) and (a > x or b > y) for j, (a, b) in enumerate(points)
                    if j != i)
    if not dominated:
      front.append(i)
  return sorted(front, key=lambda i: points[i][0])


def parse_values(text: str) -> list[float]:
  values = []
  for item in multi.parse_list(text, "--values"):
    try:
      v = float(item)
    except ValueError:
      raise cli.UsageError(f"--values must be numbers, got {item!r}") from None
    if v < 0:
      raise cli.UsageError(f"--values must be >= 0 (a {FLAGS.param} of {v} is not allowed)")
    values.append(v)
  return values


def summarize(root: str, param: str, values: Sequence[float], workdirs: Sequence[str]) -> dict:
  """Writes ``sweep.json``, ``sweep.md`` and ``pareto.png`` under ``root``."""
  rows = []
  for v, w in zip(values, workdirs):
    with open(os.path.join(w, "results.json")) as f:
      r = json.load(f)
    rows.append({param: v, "workdir": w, "clean_accuracy": r.get("clean_accuracy"),
                 "mean_corruption_accuracy": r.get("mean_corruption_accuracy"),
                 "train_seconds": r.get("train_seconds")})
  pts = [(r["clean_accuracy"] or 0.0, r["mean_corruption_accuracy"] or 0.0) for r in rows]
  front = pareto_front(pts)
  for i, r in enumerate(rows):
    r["pareto_optimal"] = i in front
  summary = {"param": param, "runs": rows}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(summary, f, indent=2)
  lines = [f"| {param} | clean accuracy | mean corruption accuracy | train s | Pareto |",
           "|---|---|---|---|---|"]
  fmt = lambda x: "n/a" if x is None else f"{100 * x:.2f}%"
  for r in rows:
    lines.append(f"| {r[param]:g} | {fmt(r['clean_accuracy'])} | "
                 f"{fmt(r['mean_corruption_accuracy'])} | {r['train_seconds'] or 0:.0f} | "
                 f"{'yes' if r['pareto_optimal'] else ''} |")
  with open(os.path.join(root, "sweep.md"), "w") as f:
    f.write(f"# Sweep of {param}\n\n" + "\n".join(lines) + "\n")
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 4))
  ax.scatter([100 * p[0] for p in pts], [100 * p[1] for p in pts], color="tab:blue")
  for (x, y), r in zip(pts, rows):
    ax.annotate(f"{param}={r[param]:g}", (100 * x, 100 * y), textcoords="offset points",
                xytext=(4, 4), fontsize=8)
  ax.plot([100 * pts[i][0] for i in front], [100 * pts[i][1] for i in front], color="tab:red",
          label="Pareto front")
  ax.set_xlabel("clean accuracy (%)")
  ax.set_ylabel("mean corruption accuracy (%)")
  ax.set_title(f"{param} sweep")
  ax.legend(loc="best")
  fig.tight_layout()
  fig.savefig(os.path.join(root, "pareto.png"), dpi=120)
  plt.close(fig)
  return summary


def build_configs(overrides) -> tuple[list[float], list]:
  from drojax.data.registry import validate_name

  cli.check_choice(FLAGS.param, list(PARAMS), "--param")
  cli.check_choice(FLAGS.preset, common.PRESETS, "--preset")
  try:
    validate_name(FLAGS.dataset)
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  values = parse_values(FLAGS.values)
  configs = []
  for v in values:
    config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset)
    cli.apply_overrides(config, overrides)
    with config.unlocked():
      config.method_config[PARAMS[FLAGS.param]] = v
    configs.append((f"{FLAGS.param}_{v:g}", config))
  return values, configs


def main(argv, overrides):
  del argv
  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  values, configs = build_configs(overrides)
  workdirs = multi.run_all(configs, FLAGS.workdir,
                           run_kwargs=dict(data_dir=FLAGS.data_dir,
                                           compilation_cache_dir=FLAGS.compilation_cache_dir))
  import jax

  if jax.process_index() == 0:
    summarize(FLAGS.workdir, FLAGS.param, values, workdirs)
    print(f"sweep: {os.path.join(FLAGS.workdir, 'sweep.md')}, "
          f"{os.path.join(FLAGS.workdir, 'pareto.png')}")


if __name__ == "__main__":
  cli.run_main(main)
