"""Tables and plots of the reproduction study (``experiments.reproduce``) from its workdirs.

Every cell is the mean over seeds with a 95% Student-t interval (half-width shown as ``±``);
the difference rows pair runs of the same seed (same data order, initialisation and test
subset), so they are the sharper test of a claim. Unfinished runs are left out and counted.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from experiments.formatting import ci_cell, mean_ci

PGD_EPS = (4, 8, 16)  # in 1/255
PAIRS = {
    "fmnist_pgd": (("dro", "erm"), ("dro_mixup", "mixup")),
    "cifar_augment": (("dro_mixup", "mixup"), ("dro_augmix", "augmix")),
    "cifar_var_dro": (("var_dro", "erm"), ("var_dro", "kl_dro"), ("kl_dro", "erm"),
                      ("var_dro", "kl_dro_T10"), ("kl_dro_T10", "erm")),
}
TITLES = {
    "fmnist_pgd": "1. DRO-Augment under PGD (Fashion-MNIST, small CNN)",
    "cifar_augment": "2. DRO-Augment under corruptions (CIFAR-10, PreActResNet-18)",
    "cifar_var_dro": "3. Var-DRO vs ERM and KL-DRO (CIFAR-10, PreActResNet-18)",
    "fmnist_rho": "4a. rho sweep of dro_mixup (Fashion-MNIST, small CNN)",
    "cifar_rho": "4b. rho sweep of dro_mixup (CIFAR-10, PreActResNet-18)",
}
# A sweep study -> (the study whose mixup (rho = 0) and dro_mixup runs join it, the robust
# metric of its Pareto plot and that metric's label).
SWEEPS = {
    "fmnist_rho": ("fmnist_pgd", "pgd8", "PGD 8/255 accuracy (%)"),
    "cifar_rho": ("cifar_augment", "mca_standard", "mean corrupted accuracy, standard (%)"),
}


# ------------------------------------------------------------------------------- collection

def metrics_of(results: dict[str, Any]) -> dict[str, float | None]:
  """The headline numbers of one ``results.json``."""
  from drojax.evaluate import eps_key

  out: dict[str, float | None] = {"clean": results.get("clean_accuracy")}
  adv = results.get("adversarial_accuracy") or {}
  for e in PGD_EPS:
    out[f"pgd{e}"] = adv.get(eps_key(e / 255))
  for table in ("standard", "refined"):
    block = results.get(f"corrupted_{table}") or {}
    out[f"mca_{table}"] = block.get("mean_corruption_accuracy")
    out[f"per_corruption_{table}"] = block.get("per_corruption_mean")
  out["train_seconds"] = results.get("train_seconds")
  return out


def collect(runs, root: str) -> list[dict[str, Any]]:
  """One row per finished run: study, name, method, seed, rho and :func:`metrics_of`."""
  rows = []
  for spec in runs:
    path = os.path.join(spec.workdir(root), "results.json")
    if not os.path.isfile(path):
      continue
    with open(path) as f:
      results = json.load(f)
    rows.append({"study": spec.study, "name": spec.name, "method": spec.method,
                 "seed": spec.seed, "rho": float(spec.config.method_config.rho),
                 **metrics_of(results)})
  return rows


def _cells(rows, name: str, columns: Sequence[str]):
  sel = [r for r in rows if r["name"] == name]
  return {c: mean_ci([r[c] for r in sel]) for c in columns}


def _paired(rows, a: str, b: str, columns: Sequence[str]):
  by_seed = {}
  for r in rows:
    by_seed.setdefault(r["seed"], {})[r["name"]] = r
  out = {}
  for c in columns:
    diffs = [d[a][c] - d[b][c] for d in by_seed.values()
             if a in d and b in d and d[a][c] is not None and d[b][c] is not None]
    out[c] = mean_ci(diffs)
  return out


def _columns(study: str) -> tuple[list[str], list[str]]:
  if study.startswith("fmnist"):
    return (["clean"] + [f"pgd{e}" for e in PGD_EPS],
            ["clean"] + [f"PGD {e}/255" for e in PGD_EPS])
  return ["clean", "mca_standard", "mca_refined"], ["clean", "mean corrupted (standard)",
                                                    "mean corrupted (refined)"]


def study_table(rows, study: str, names: Sequence[str],
                failed: dict[str, int] | None = None) -> str:
  """The markdown table of ``study``: one row per run name, then the paired differences.

  ``failed``: ``{name: number of seeds that diverged}``, shown beside the seed count.
  """
  failed = failed or {}
  cols, heads = _columns(study)
  sel = [r for r in rows if r["study"] == study]
  lines = ["| run | seeds | " + " | ".join(heads) + " | train min/run |",
           "|---|---|" + "---|" * len(cols) + "---|"]
  for name in names:
    cells = _cells(sel, name, cols)
    n = max(c[2] for c in cells.values())
    secs = mean_ci([r["train_seconds"] for r in sel if r["name"] == name])
    mins = "n/a" if secs[2] == 0 else f"{secs[0] / 60:.1f}"
    seeds = f"{n} ({failed[name]} diverged)" if failed.get(name) else f"{n}"
    lines.append(f"| {name} | {seeds} | " + " | ".join(ci_cell(cells[c]) for c in cols)
                 + f" | {mins} |")
  for a, b in PAIRS.get(study, ()):
    cells = _paired(sel, a, b, cols)
    n = max(c[2] for c in cells.values())
    lines.append(f"| **{a} − {b}** (paired) | {n} | "
                 + " | ".join(ci_cell(cells[c], signed=True) for c in cols) + " | |")
  return "\n".join(lines)


def per_corruption_table(rows, study: str, names: Sequence[str],
                         table: str = "standard") -> str:
  """Mean accuracy (over seeds, 5 severities each) per corruption: one column per run name."""
  sel = [r for r in rows if r["study"] == study and r.get(f"per_corruption_{table}")]
  corruptions = list(dict.fromkeys(c for r in sel for c in r[f"per_corruption_{table}"]))
  if not corruptions:
    return ""
  lines = ["| corruption | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
  for c in corruptions:
    cells = [mean_ci([r[f"per_corruption_{table}"].get(c) for r in sel if r["name"] == n])
             for n in names]
    lines.append(f"| {c} | " + " | ".join("n/a" if k[2] == 0 else f"{100 * k[0]:.1f}"
                                         for k in cells) + " |")
  return "\n".join(lines)


def rho_rows(rows, sweep: str) -> list[dict[str, Any]]:
  """A sweep's points: its own runs plus its base study's mixup (rho = 0) and dro_mixup."""
  base = SWEEPS[sweep][0]
  out = [dict(r) for r in rows if r["study"] == sweep]
  for r in rows:
    if r["study"] == base and r["name"] in ("mixup", "dro_mixup"):
      out.append({**r, "rho": 0.0 if r["name"] == "mixup" else r["rho"]})
  return out


def rho_table(rows, sweep: str) -> tuple[str, list[tuple[float, dict]]]:
  pts = rho_rows(rows, sweep)
  cols, heads = _columns(sweep)
  lines = ["| rho | seeds | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(cols)]
  summary = []
  for rho in sorted({r["rho"] for r in pts}):
    sel = [r for r in pts if r["rho"] == rho]
    cells = {c: mean_ci([r[c] for r in sel]) for c in cols}
    summary.append((rho, cells))
    lines.append(f"| {rho:g} | {len(sel)} | " + " | ".join(ci_cell(cells[c]) for c in cols) + " |")
  return "\n".join(lines), summary


# ------------------------------------------------------------------------------- plots

def _bar_plot(rows, study: str, names: Sequence[str], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cols, heads = _columns(study)
  sel = [r for r in rows if r["study"] == study]
  fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(cols), 3.6))
  width = 0.8 / max(len(names), 1)
  for i, name in enumerate(names):
    cells = _cells(sel, name, cols)
    xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cols))]
    means = [100 * cells[c][0] if cells[c][2] else 0.0 for c in cols]
    errs = [100 * cells[c][1] if cells[c][1] is not None else 0.0 for c in cols]
    ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
  ax.set_xticks(range(len(cols)))
  ax.set_xticklabels(heads, fontsize=8)
  ax.set_ylabel("accuracy (%)")
  ax.set_title(TITLES[study], fontsize=9)
  ax.legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _pareto_plot(summary, path: str, sweep: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from experiments.pareto import pareto_front

  _, robust, label = SWEEPS[sweep]
  pts = [(rho, cells) for rho, cells in summary if cells["clean"][2] and cells[robust][2]]
  fig, ax = plt.subplots(figsize=(5, 4))
  xy = [(100 * c["clean"][0], 100 * c[robust][0]) for _, c in pts]
  for (rho, c), (x, y) in zip(pts, xy):
    ax.errorbar(x, y, xerr=100 * (c["clean"][1] or 0), yerr=100 * (c[robust][1] or 0),
                fmt="o", color="tab:blue", capsize=3)
    ax.annotate(f"rho={rho:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
  front = pareto_front(xy)
  ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="tab:red",
          label="Pareto front (means)")
  ax.set_xlabel("clean accuracy (%)")
  ax.set_ylabel(label)
  ax.set_title(TITLES[sweep][4:] + ": clean vs robust", fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


# ------------------------------------------------------------------------------- report

def write_report(runs, root: str, out_dir: str, *, scale_name: str = "reduced",
                 failures: dict[str, str] | None = None) -> dict:
  """Writes ``results.md``, ``summary.json`` and a PNG per study into ``out_dir``.

  ``failures``: ``{"study/name/seedK": error}`` of the runs that diverged; they are listed.
  """
  failures = failures or {}
  os.makedirs(out_dir, exist_ok=True)
  rows = collect(runs, root)
  names: dict[str, list[str]] = {}
  for spec in runs:
    if spec.name not in names.setdefault(spec.study, []):
      names[spec.study].append(spec.name)
  parts = [f"# Reproduction results (scale `{scale_name}`)\n",
           f"{len(rows)} of {len(runs)} runs finished. Accuracy in %, mean ± 95% t-interval "
           "half-width over seeds; paired rows are per-seed differences.\n"]
  plots = {}
  for study in (s for s in TITLES if s in names):
    parts.append(f"## {TITLES[study]}\n")
    if study in SWEEPS:
      table, summary = rho_table(rows, study)
      parts.append(table + "\n")
      if summary:
        plots[study] = os.path.join(out_dir, f"{study}_pareto.png")
        _pareto_plot(summary, plots[study], study)
    else:
      failed = {}
      for key in failures:
        run_study, run_name, _ = key.split("/")
        if run_study == study:
          failed[run_name] = failed.get(run_name, 0) + 1
      parts.append(study_table(rows, study, names[study], failed) + "\n")
      per = per_corruption_table(rows, study, names[study])
      if per:
        parts.append("Per corruption (standard table; mean over seeds and the 5 severities):\n")
        parts.append(per + "\n")
      if any(r["study"] == study for r in rows):
        plots[study] = os.path.join(out_dir, f"{study}.png")
        _bar_plot(rows, study, names[study], plots[study])
    if study in plots:
      parts.append(f"![{study}]({os.path.basename(plots[study])})\n")
  if failures:
    parts.append("## Runs that failed\n")
    parts.extend(f"- `{run}`: {error}" for run, error in sorted(failures.items()))
    parts.append("")
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(parts))
  summary = {"scale": scale_name, "finished": len(rows), "planned": len(runs), "runs": rows,
             "failed": failures}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary
