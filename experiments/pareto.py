"""Sweep summaries: the Pareto front of (clean, corrupted) accuracy, tables and the plot.

No flags here, so tests and other tools can import it next to any CLI.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from experiments import cli, multi
from experiments.formatting import pct


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
  rows = []
  for v, w in zip(values, workdirs):
    with open(os.path.join(w, "results.json")) as f:
      r = json.load(f)
    rows.append({param: v, "workdir": w, "clean_accuracy": r.get("clean_accuracy"),
                 "mean_corruption_accuracy": r.get("mean_corruption_accuracy"),
                 "worst_group_accuracy": (r.get("group_accuracy") or {}).get("worst_group"),
                 "train_seconds": r.get("train_seconds")})
  pts = [(r["clean_accuracy"] or 0.0, r["mean_corruption_accuracy"] or 0.0) for r in rows]
  front = pareto_front(pts)
  for i, r in enumerate(rows):
    r["pareto_optimal"] = i in front
  summary = {"param": param, "runs": rows}
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump(summary, f, indent=2)
  groups = any(r["worst_group_accuracy"] is not None for r in rows)  # group-shift data
  lines = [f"| {param} | clean accuracy | mean corruption accuracy |"
           + (" worst-group accuracy |" if groups else "") + " train s | Pareto |",
           "|---|---|---|" + ("---|" if groups else "") + "---|---|"]
  for r in rows:
    clean, mca, worst = (pct(r[k], sign="%", missing="n/a") for k in (
        "clean_accuracy", "mean_corruption_accuracy", "worst_group_accuracy"))
    lines.append(f"| {r[param]:g} | {clean} | {mca} |" + (f" {worst} |" if groups else "")
                 + f" {r['train_seconds'] or 0:.0f} | {'yes' if r['pareto_optimal'] else ''} |")
  with open(os.path.join(root, "sweep.md"), "w") as f:
    f.write(f"# Sweep of {param}\n\n" + "\n".join(lines) + "\n")
  from experiments.reporting import scatter_plot

  scatter_plot([(f"{param}={r[param]:g}", 100 * x, None, 100 * y, None)
                for (x, y), r in zip(pts, rows)], os.path.join(root, "pareto.png"),
               xlabel="clean accuracy (%)", ylabel="mean corruption accuracy (%)",
               title=f"{param} sweep: clean vs mean corruption accuracy (axes zoomed)",
               front=True, annotate=True)
  return summary


