"""The one report writer of every study (``experiments.studies``) from its workdirs.

Every cell is the mean over seeds with a 95 % Student-t interval (half-width shown as ``±``);
paired rows pair runs of the same seed (same data order, initialisation and test subset), so
they are the sharper test of a claim. Unfinished runs are left out and counted; runs that
failed (diverged) are counted beside their seeds and listed. The study adds its own sections
(tables through :func:`table`, plots); this module writes the heading, the failures, the
markdown file and ``summary.json`` (every finished run's numbers, and mean / half-width / n per
run and column).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, NamedTuple, Sequence

from experiments import studies
from experiments.formatting import ci_cell, md_table, mean_ci

_KEYS = ("study", "name", "method", "seed", "rho")


class Report(NamedTuple):
  """What a study's ``sections`` see."""

  rows: list[dict[str, Any]]  # one per finished run: _KEYS and the study's metrics
  names: dict[str, list[str]]  # sub-study -> its run names, in plan order
  failures: dict[str, str]  # "study/name/seedK" -> the recorded error
  out_dir: str

  def part(self, study: str) -> list[dict[str, Any]]:
    return [r for r in self.rows if r["study"] == study]

  def failed_in(self, study: str) -> dict[str, int]:
    """``{name: number of seeds that failed}`` in ``study``."""
    tags = (tag.split("/") for tag in self.failures)
    return dict(Counter(name for part, name, _ in tags if part == study))


def collect(runs: Sequence[studies.RunSpec], root: str, metrics) -> list[dict[str, Any]]:
  """One row per finished run: study, name, method, seed, rho and ``metrics(results)``."""
  from experiments import reporting

  return [{"study": spec.study, "name": spec.name, "method": spec.method, "seed": spec.seed,
           "rho": float(spec.config.method_config.rho),
           **metrics(reporting.read_results(spec.workdir(root)))}
          for spec in runs if studies.finished(spec, root)]


def cells(rows, name: str, columns: Sequence[str]) -> dict[str, tuple]:
  """``{column: mean_ci}`` over the rows of run ``name``."""
  sel = [r for r in rows if r["name"] == name]
  return {c: mean_ci([r.get(c) for r in sel]) for c in columns}


def points(rows, names: Sequence[str], x: str, y: str, *, x_scale: float = 100.0) -> list[tuple]:
  """``reporting.scatter_plot``'s ``(name, x, x half-width, y, y half-width)`` of the runs with
  both columns (means over seeds; ``y`` in percent, ``x`` times ``x_scale``)."""
  out = []
  for name in names:
    c = cells(rows, name, [x, y])
    if c[x][2] and c[y][2]:
      out.append((name, x_scale * c[x][0], x_scale * (c[x][1] or 0), 100 * c[y][0],
                  100 * (c[y][1] or 0)))
  return out


def paired(rows, a: str, b: str, columns: Sequence[str]) -> dict[str, tuple]:
  """``{column: mean_ci}`` of the per-seed differences ``a - b`` (seeds with both only)."""
  by_seed: dict[int, dict[str, dict]] = {}
  for r in rows:
    by_seed.setdefault(r["seed"], {})[r["name"]] = r
  return {c: mean_ci([d[a][c] - d[b][c] for d in by_seed.values()
                      if a in d and b in d and d[a].get(c) is not None
                      and d[b].get(c) is not None]) for c in columns}


def table(rows, names: Sequence[str], columns: Sequence[tuple[str, str]], *,
          pairs: Sequence[tuple[str, str]] = (), failed: dict[str, int] | None = None
          ) -> list[str]:
  """A markdown table: one row per run name (its finished seeds, ``columns`` ``[(key,
  heading)]`` in percent, training seconds), then the ``pairs`` as paired differences."""
  failed = failed or {}
  keys = [k for k, _ in columns]
  body = []
  for name in names:
    c = cells(rows, name, keys + ["train_seconds"])
    n = sum(r["name"] == name for r in rows)
    body.append([name, f"{n} ({failed[name]} diverged)" if failed.get(name) else n,
                 *(ci_cell(c[k]) for k in keys), ci_cell(c["train_seconds"], scale=1.0, digits=1)])
  lines = md_table(["run", "seeds", *(h for _, h in columns), "train s"], body)
  for a, b in pairs:  # the empty train s cell is written "| |", as in the recorded reports
    c = paired(rows, a, b, keys)
    lines.append(f"| **{a} − {b}** (paired) | {max(v[2] for v in c.values())} | " +
                 " | ".join(ci_cell(c[k], signed=True) for k in keys) + " | |")
  return lines + [""]


def _summary_cells(rows) -> dict[str, dict[str, dict]]:
  out: dict[str, dict[str, dict]] = {}
  for r in rows:  # a run's columns: the numbers of any of its seeds
    sel = [q for q in rows if q["study"] == r["study"]]
    numeric = [k for k, v in r.items()
               if k not in _KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    out.setdefault(f"{r['study']}/{r['name']}", {}).update(
        {k: {"mean": m, "half_width": h, "n": n}
         for k, (m, h, n) in cells(sel, r["name"], numeric).items() if n})
  return out


def write_report(study: studies.Study, runs: Sequence[studies.RunSpec], root: str,
                 out_dir: str, *, scale_name: str, scale: Any, missing: Sequence[str] = (),
                 wall_s: float | None = None) -> str:
  """Writes ``study.report_file``, ``summary.json`` and the study's plots into ``out_dir``;
  returns the markdown path."""
  os.makedirs(out_dir, exist_ok=True)
  rows = collect(runs, root, study.metrics)
  failures = {s.tag: e for s in runs if (e := studies.failed(s, root)) is not None}
  names = {study: list(dict.fromkeys(s.name for s in runs if s.study == study))
           for study in dict.fromkeys(s.study for s in runs)}
  lines = [f"# {study.title} (scale `{scale_name}`)", "",
           (f"{len(rows)} of {len(runs)} runs finished. Accuracy in %, mean ± 95 % t-interval "
            "half-width over seeds; paired rows are per-seed differences; train s is wall time "
            "with compilation (with the load of any process sharing the device). " +
            study.note(scale)).rstrip(), ""]
  if missing:
    lines += [f"Not run (method missing in this checkout): {', '.join(missing)}.", ""]
  if wall_s is not None:
    lines += [f"Wall time of this invocation: {wall_s:.0f} s.", ""]
  lines += study.sections(Report(rows, names, failures, out_dir))
  if failures:
    lines += ["## Runs that failed", ""]
    lines += [f"- `{run}`: {error}" for run, error in sorted(failures.items())] + [""]
  md = os.path.join(out_dir, study.report_file)
  with open(md, "w") as f:
    f.write("\n".join(lines))
  summary = {"scale": scale_name, "sizes": vars(scale), "finished": len(rows),
             "planned": len(runs), "missing_methods": list(missing), "failed": failures,
             "runs": rows, "cells": _summary_cells(rows)}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, default=str)
  return md


__all__ = ["Report", "collect", "cells", "points", "paired", "table", "write_report"]
