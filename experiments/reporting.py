"""Result files of an evaluation (``results.json``, ``results.csv``, ``results.md``, PNG plots),
the summary a run prints, and the comparison of several runs.

This is an I/O module: it writes files into a run's work directory. Plots use matplotlib's
Agg backend (no display needed) and are imported lazily.

``results.json`` schema (keys the writers understand; others are kept as they are):

* ``method``, ``dataset`` (str), ``train_seconds`` (float), filled by the experiment CLIs;
* ``clean_accuracy`` (float in [0, 1]);
* ``corruption_source`` (``'generated:<table>'``, ``'published'`` or None);
* ``corruption_accuracy``: ``{name: {"1": acc, ..., "5": acc}}``;
* ``mean_corruption_accuracy``: mean over the 15 standard corruptions x 5 severities (of those
  present); ``extra_corruption_accuracy``: the same over the 4 extras;
* ``adversarial_accuracy``: ``{eps_key: acc}`` with ``eps_key = '%.6g' % eps`` (pixel space),
  the chosen attack's (``eval.attack``; for the suite the per-example worst case),
  ``adversarial_by_attack``: ``{attack: {eps_key: acc}}`` (``pgd``, or ``apgd_ce``, or the
  suite's ``apgd_ce``, ``apgd_t``, ``square``, cumulative), and ``adversarial``: the settings;
* ``group_accuracy``: ``{"per_group": {g: acc}, "worst_group", "average", ...}``.

Accuracies are fractions in the files and percentages in the markdown tables and plots.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from typing import Any, Mapping, Sequence

from drojax.corruptions.tables import NAMES, STANDARD_NAMES
from drojax.evaluate import ATTACK_LABELS, FAMILIES, summarize_corruptions

from experiments.formatting import attack_name, eps_label, md_table, pct

REQUIRED_KEYS = ("method", "dataset", "clean_accuracy", "mean_corruption_accuracy",
                 "corruption_accuracy", "adversarial_accuracy", "train_seconds")
# The plots write_results writes into a run's workdir, in the summary's order.
SEVERITY_PNG, ADVERSARIAL_PNG = "accuracy_vs_severity.png", "adversarial.png"


def _by_attack(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
  """``{attack: {eps_key: acc}}``; results written before per-attack columns count as PGD."""
  if results.get("adversarial_by_attack"):
    return dict(results["adversarial_by_attack"])
  adv = results.get("adversarial_accuracy") or {}
  return {(results.get("adversarial") or {}).get("attack", "pgd"): dict(adv)} if adv else {}


def _clean_json(value: Any) -> Any:
  """NaN/inf -> None and NumPy scalars -> Python, recursively (strict JSON)."""
  if isinstance(value, Mapping):
    return {str(k): _clean_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean_json(v) for v in value]
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _norm_tag(results: Mapping[str, Any], sep: str) -> str:
  """``sep + 'L2'`` for a run attacked in L2, ``''`` for L-inf (and runs that predate the field)."""
  norm = (results.get("adversarial") or {}).get("norm") or "linf"
  return "" if norm == "linf" else sep + norm.upper()


def _sorted_sev(d: Mapping[str, Any]) -> list[str]:
  return sorted(d, key=float)


def _name_order(acc: Mapping[str, Any]) -> list[str]:
  return [n for n in NAMES if n in acc] + sorted(n for n in acc if n not in NAMES)


def corruption_mean_scope(accuracy: Mapping[str, Mapping[str, Any]]) -> str:
  """What ``mean_corruption_accuracy`` averages for ``corruption_accuracy`` = ``accuracy``:
  e.g. ``10 standard corruptions x severities 1,3,5`` (the extras are not in the mean)."""
  standard = [n for n in accuracy if n in STANDARD_NAMES]
  severities = sorted({int(s) for n in standard for s in accuracy[n]})
  noun = "corruption" if len(standard) == 1 else "corruptions"
  return (f"{len(standard)} standard {noun} x "
          f"severit{'y' if len(severities) == 1 else 'ies'} {','.join(map(str, severities))}")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
  """Indices of the points no other point dominates (higher is better in both coordinates),
  sorted by the first coordinate.

  >>> pareto_front([(0.9, 0.5), (0.8, 0.6), (0.7, 0.55), (0.9, 0.4)])
  [1, 0]
  """
  # A point never dominates itself (nor an equal point): no need to skip it.
  front = [i for i, (x, y) in enumerate(points)
           if not any(a >= x and b >= y and (a > x or b > y) for a, b in points)]
  return sorted(front, key=lambda i: points[i][0])


def results_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The results as long-format rows ``{metric, name, level, value}`` (the CSV's rows)."""
  rows = []

  def add(metric: str, value: Any, name: str = "", level: str = "") -> None:
    rows.append({"metric": metric, "name": name, "level": level, "value": value})

  add("clean_accuracy", results.get("clean_accuracy"))
  acc = results.get("corruption_accuracy") or {}
  for name in _name_order(acc):
    for sev in _sorted_sev(acc[name]):
      add("corruption_accuracy", acc[name][sev], name, sev)
  for k in ("mean_corruption_accuracy", "extra_corruption_accuracy"):
    if results.get(k) is not None:
      add(k, results[k])
  norm = (results.get("adversarial") or {}).get("norm", "")
  attacks = {"": results.get("adversarial_accuracy") or {}, **_by_attack(results)}
  for a, accs in attacks.items():
    for e in _sorted_sev(accs):
      add("adversarial_accuracy" + (f"_{a}" if a else ""), accs[e], norm, e)
  groups = results.get("group_accuracy") or {}
  for g, v in (groups.get("per_group") or {}).items():
    add("group_accuracy", v, level=g)
  for k in ("worst_group", "average"):
    if k in groups:
      add(f"group_{k}", groups[k])
  if results.get("train_seconds") is not None:
    add("train_seconds", results["train_seconds"])
  return rows


def results_markdown(results: Mapping[str, Any]) -> str:
  """Readable markdown tables: summary, corruptions x severities, adversarial, groups."""
  r = results
  title = " / ".join(str(r[k]) for k in ("method", "dataset") if r.get(k)) or "results"
  rows = [("clean accuracy (%)", pct(r.get("clean_accuracy")))]
  if r.get("corruption_accuracy"):
    scope = corruption_mean_scope(r["corruption_accuracy"])
    rows.append((f"mean corruption accuracy, {scope} (%) "
                 f"[{r.get('corruption_source') or 'corruptions'}]",
                 pct(r.get("mean_corruption_accuracy"))))
    if r.get("extra_corruption_accuracy") is not None:
      rows.append(("mean accuracy, 4 extra corruptions (%)",
                   pct(r.get("extra_corruption_accuracy"))))
  settings = r.get("adversarial") or {}
  attack = settings.get("attack", "pgd") + _norm_tag(r, ", ")
  adv = r.get("adversarial_accuracy") or {}
  rows += [(f"adversarial accuracy ({attack}), eps {eps_label(e, with_value=True)} (%)",
            pct(adv[e])) for e in _sorted_sev(adv)]
  g = r.get("group_accuracy") or {}
  if g:
    rows += [("worst-group accuracy (%)", pct(g.get("worst_group"))),
             (f"average accuracy, {g.get('weights_from', 'train')}-weighted (%)",
              pct(g.get("average")))]
  if r.get("train_seconds") is not None:
    rows.append(("train time (s)", f"{float(r['train_seconds']):.1f}"))
  lines = [f"# {title}", ""] + md_table(("metric", "value"), rows) + [""]

  acc = r.get("corruption_accuracy") or {}
  if acc:
    sevs = sorted({s for d in acc.values() for s in d}, key=float)
    summary = summarize_corruptions(acc)
    rows = [[name + ("" if name in STANDARD_NAMES else " (extra)"),
             *(pct(acc[name].get(s)) for s in sevs),
             pct(summary["per_corruption_mean"][name])] for name in _name_order(acc)]
    rows.append(["**mean, standard**", *(pct(summary["per_severity_mean"].get(s)) for s in sevs),
                 f"**{pct(summary['mean_corruption_accuracy'])}**"])
    if summary["extra_corruption_accuracy"] is not None:
      extra = summary["extra_per_severity_mean"]
      rows.append(["mean, extras", *(pct(extra.get(s)) for s in sevs),
                   pct(summary["extra_corruption_accuracy"])])
    lines += [f"## Corruption accuracy (%) — {r.get('corruption_source') or ''}".rstrip(" —"), ""]
    lines += md_table(["corruption", *(f"sev {s}" for s in sevs), "mean"], rows)
    if not summary["complete"]:
      lines += ["", "_Not every standard corruption x severity was evaluated: the mean is over "
                "those present._"]
    lines.append("")

  if adv:
    desc = ", ".join(f"{k} {v}" for k, v in settings.items())
    by = _by_attack(r)
    names = list(by)
    note = (" Columns are cumulative: an example counts as robust after an attack only if it "
            "survived it and every attack to its left; the last is the worst case."
            if len(names) > 1 else "")
    lines += ["## Adversarial accuracy (%)", "", f"In pixel space [0, 1]; {desc}.{note}", ""]
    lines += md_table(["eps", *(ATTACK_LABELS.get(a, a) for a in names)],
                      [[eps_label(e, with_value=True), *(pct(by[a].get(e)) for a in names)]
                       for e in _sorted_sev(adv)])
    lines.append("")

  if g:
    rows = [[k, pct(v), g.get("counts", {}).get(k, "-"),
             f"{g.get('weights', {}).get(k, float('nan')):.3f}"]
            for k, v in g.get("per_group", {}).items()]
    rows += [[f"**worst group** ({g.get('worst_group_id')})", pct(g.get("worst_group")), "", ""],
             [f"**average** ({g.get('weights_from', 'train')} proportions)",
              pct(g.get("average")), "", ""]]
    lines += ["## Group accuracy (%)", "",
              *md_table(["group", "accuracy", "eval count", "weight"], rows), ""]
  return "\n".join(lines)


# ------------------------------------------------------------------------------- plots


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def save_figure(fig, path: str) -> str:
  """Writes ``fig`` to ``path`` (PNG, 100 dpi, tight layout), closes it and returns ``path``."""
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  pyplot().close(fig)
  return path


def plot_severity(results_by_label: Mapping[str, Mapping[str, Any]], path: str,
                  *, title: str | None = None) -> str:
  """Accuracy vs severity, one panel per corruption family, one line per corruption.

  With several runs (``results_by_label`` of length > 1) each panel shows the family mean
  per run instead. Severity 0 is the clean accuracy.
  """
  fig, axes = pyplot().subplots(1, 4, figsize=(17, 4), sharey=True)
  multi = len(results_by_label) > 1
  for ax, (fam, members) in zip(axes, FAMILIES.items()):
    for label, res in results_by_label.items():
      acc = res.get("corruption_accuracy") or {}
      present = [n for n in members if n in acc]
      if multi and present:  # the family mean per severity
        sevs = {s for n in present for s in acc[n]}
        lines = {label: {s: sum(acc[n][s] for n in present if s in acc[n]) /
                         sum(1 for n in present if s in acc[n]) for s in sevs}}
      else:
        lines = {n: acc[n] for n in present}
      for line_label, by_sev in lines.items():
        if res.get("clean_accuracy") is not None:
          by_sev = {"0": res["clean_accuracy"], **by_sev}
        sevs = _sorted_sev(by_sev)
        ax.plot([float(s) for s in sevs], [100 * by_sev[s] for s in sevs], marker="o",
                label=line_label)
    # A fixed accuracy scale: a few points' drop must not look like a cliff.
    ax.set(title=fam, xlabel="severity (0 = clean)", xlim=(-0.25, 5.25), xticks=range(6),
           ylim=(0, 100))
    if not ax.lines:
      ax.text(0.5, 0.5, "not evaluated", ha="center", va="center", transform=ax.transAxes,
              color="gray")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7, loc="lower left")  # accuracy is highest at low severity: top free
  axes[0].set_ylabel("accuracy (%)")
  if title:
    fig.suptitle(title)
  return save_figure(fig, path)


def plot_adversarial(results_by_label: Mapping[str, Mapping[str, Any]], path: str) -> str:
  """Accuracy vs eps (in 1/255 units) from eps 0 (the clean accuracy), one line per run, on a
  0-100 % axis so a drop looks as large as it is."""
  fig, ax = pyplot().subplots(figsize=(5, 4))
  attacks = set()
  for label, res in results_by_label.items():
    adv = dict(res.get("adversarial_accuracy") or {})
    if res.get("clean_accuracy") is not None:
      adv.setdefault("0", res["clean_accuracy"])
    es = sorted(adv, key=float)
    ax.plot([255 * float(e) for e in es], [100 * adv[e] for e in es], marker="o", label=label)
    attacks.add(attack_name(res))
  ax.set(title=f"accuracy under {' / '.join(sorted(attacks))} attack (eps 0 = clean)",
         xlabel="eps (x 1/255, pixel space)", ylabel="robust accuracy (%)", ylim=(0, 100))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def bar_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
              ticks: Sequence[str], path: str, *, ylabel: str = "accuracy (%)",
              title: str | None = None, ylim: tuple[float, float] | None = (0, 100)) -> str:
  """Grouped bars: one group per tick, one bar per series ``{label: (values, errors or
  None)}``; a NaN value draws no bar (not measured). ``ylim`` None: matplotlib's range."""
  fig, ax = pyplot().subplots(figsize=(max(5, 1.6 * len(ticks) + 0.4 * len(series)), 4.5))
  width = 0.8 / max(1, len(series))
  for i, (label, (ys, errs)) in enumerate(series.items()):
    xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(ticks))]
    ax.bar(xs, ys, width=width, yerr=errs, capsize=3 if errs else 0, label=label)
  ax.set(xticks=range(len(ticks)), ylabel=ylabel, ylim=ylim)
  ax.set_xticklabels(ticks, rotation=20, ha="right", fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
  return save_figure(fig, path)


def scatter_plot(points: Sequence[tuple[str, float, float | None, float, float | None]],
                 path: str, *, xlabel: str, ylabel: str, title: str | None = None,
                 front: bool = False, annotate: bool = False) -> str:
  """Points ``(label, x, x_error, y, y_error)`` (errors may be None), labelled beside each point
  (``annotate``) or in a legend; ``front`` joins the Pareto-optimal means (higher is better in
  both)."""
  fig, ax = pyplot().subplots(figsize=(5.5, 4.5))
  for label, x, xerr, y, yerr in points:
    ax.errorbar(x, y, xerr=xerr or 0, yerr=yerr or 0, fmt="o", capsize=3,
                color="tab:blue" if annotate else None, label=None if annotate else label)
    if annotate:
      ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
  if annotate:
    ax.margins(0.2)  # the outermost points' labels stay inside the axes
  if front:
    best = pareto_front([(p[1], p[3]) for p in points])
    # Ringed points: a front of one point is visible too.
    ax.plot([points[i][1] for i in best], [points[i][3] for i in best], color="tab:red",
            marker="o", markersize=11, markerfacecolor="none", label="Pareto front (means)")
  ax.set(xlabel=xlabel, ylabel=ylabel)
  if title:
    ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  return save_figure(fig, path)


# ------------------------------------------------------------------------------- writers


def write_results(workdir: str, results: Mapping[str, Any]) -> dict[str, str]:
  """Writes ``results.json``, ``results.csv``, ``results.md`` and the PNG plots.

  Args:
    workdir: the run directory (created if missing).
    results: the results dict (see the module docstring for the schema); keys in
      ``REQUIRED_KEYS`` that are missing are written as null.

  Returns:
    ``{kind: path}`` of the files written (``json``, ``csv``, ``md``, and ``severity_png`` /
    ``adversarial_png`` when there is something to plot).

  Example:
    >>> import tempfile
    >>> paths = write_results(tempfile.mkdtemp(), {"method": "erm", "clean_accuracy": 0.9})
    >>> sorted(paths)
    ['csv', 'json', 'md']
  """
  os.makedirs(workdir, exist_ok=True)
  res = _clean_json({**dict.fromkeys(REQUIRED_KEYS), **results})
  for key in ("corruption_accuracy", "adversarial_accuracy"):
    res[key] = res[key] or {}
  paths = {kind: os.path.join(workdir, f"results.{kind}") for kind in ("json", "csv", "md")}
  tmp = paths["json"] + ".tmp"
  with open(tmp, "w") as f:
    json.dump(res, f, indent=2, allow_nan=False)
    f.write("\n")
  os.replace(tmp, paths["json"])  # a reader never sees half a file
  with open(paths["csv"], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["metric", "name", "level", "value"])
    w.writeheader()
    w.writerows(results_rows(res))
  with open(paths["md"], "w") as f:
    f.write(results_markdown(res))
  label = res.get("method") or "run"
  if res["corruption_accuracy"]:
    paths["severity_png"] = plot_severity(
        {label: res}, os.path.join(workdir, SEVERITY_PNG),
        title=f"{label} on {res.get('dataset') or ''} ({res.get('corruption_source') or ''})")
  if res["adversarial_accuracy"]:
    paths["adversarial_png"] = plot_adversarial({label: res},
                                                os.path.join(workdir, ADVERSARIAL_PNG))
  return paths


def read_results(workdir: str) -> dict[str, Any]:
  """``workdir/results.json``; ``FileNotFoundError`` naming the file when the run has none."""
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is the run in {workdir} finished?")
  with open(path) as f:
    return json.load(f)


# ------------------------------------------------------------------------------- summary

# Console style: one decimal with the sign.
_pct = functools.partial(pct, digits=1, sign="%", missing="n/a")


def format_summary(results: Mapping[str, Any], workdir: str) -> str:
  """The few lines a run ends with (no trailing newline): the headline accuracies of
  ``results`` (the ``results.json`` dict; missing keys are left out or "n/a"), training time
  and the files of ``workdir`` that exist, e.g.::

    == dro_augmix on digits (quick): clean 93.9% | mean corruption 81.2% (10 standard
       corruptions x severities 1,3,5) | PGD-5 eps 2/255 60.4%, 8/255 9.1% | training 71 s,
       220 steps
       tables: runs/quick_dro_augmix/results.md
       plots:  runs/quick_dro_augmix/accuracy_vs_severity.png runs/quick_dro_augmix/adversarial.png
  """
  head = f"== {results.get('method', '?')} on {results.get('dataset', '?')}"
  if results.get("preset"):
    head += f" ({results['preset']})"
  parts = [f"clean {_pct(results.get('clean_accuracy'))}"]
  corr = results.get("corruption_accuracy") or {}
  if corr:
    parts.append(f"mean corruption {_pct(results.get('mean_corruption_accuracy'))} "
                 f"({corruption_mean_scope(corr)})")
  adv = results.get("adversarial_accuracy") or {}
  if adv:
    parts.append(f"{attack_name(results)} eps " +
                 ", ".join(f"{eps_label(e)} {_pct(adv[e])}" for e in _sorted_sev(adv)))
  groups = results.get("group_accuracy") or {}
  if groups:
    parts.append(f"worst group {_pct(groups.get('worst_group'))}, "
                 f"average {_pct(groups.get('average'))}")
  seconds = results.get("train_seconds")
  if seconds is not None:
    train = f"training {float(seconds):.0f} s"
    if results.get("steps") is not None:
      train += f", {int(results['steps'])} steps"
    parts.append(train)
  lines = [head + ": " + " | ".join(parts)]
  md = os.path.join(workdir, "results.md")
  if os.path.isfile(md):
    lines.append(f"   tables: {md}")
  plots = [p for p in (os.path.join(workdir, name) for name in (SEVERITY_PNG, ADVERSARIAL_PNG))
           if os.path.isfile(p)]
  if plots:
    lines.append("   plots:  " + " ".join(plots))
  return "\n".join(lines)


def print_summary(results: Mapping[str, Any], workdir: str) -> None:
  """Prints :func:`format_summary` (flushed, so it follows the progress bars)."""
  print(format_summary(results, workdir), flush=True)


# ------------------------------------------------------------------------------- comparison


def _labels(workdirs: Sequence[str], results: Sequence[Mapping[str, Any]]) -> list[str]:
  base = [str(r.get("method") or os.path.basename(os.path.normpath(w)))
          for w, r in zip(workdirs, results)]
  out = [b if base.count(b) == 1 else f"{b} ({os.path.basename(os.path.normpath(w))})"
         for b, w in zip(base, workdirs)]
  # Still equal (same method, same folder name under different parents): number them.
  return [f"{o} #{i}" if out.count(o) > 1 else o for i, o in enumerate(out)]


def compare_runs(workdirs: Sequence[str], out: str) -> dict[str, str]:
  """One table and one bar chart comparing several runs' ``results.json``.

  Writes ``comparison.md``, ``comparison.csv`` and ``comparison.png`` (grouped bars: clean,
  mean corruption, extras, each eps, worst group) and, when the runs have corruption results,
  ``comparison_severity.png`` (family means vs severity per run).

  Args:
    workdirs: run directories, each holding ``results.json``.
    out: directory for the comparison files (created if missing).

  Returns:
    ``{kind: path}`` of the files written.

  Raises:
    FileNotFoundError: a workdir has no ``results.json`` (named in the message).
  """
  if not workdirs:
    raise ValueError("compare_runs needs at least one workdir.")
  results = [read_results(w) for w in workdirs]
  labels = _labels(workdirs, results)
  eps = sorted({e for r in results for e in (r.get("adversarial_accuracy") or {})}, key=float)
  groups = [r.get("group_accuracy") or {} for r in results]
  cols = [("clean", [r.get("clean_accuracy") for r in results]),
          ("mean corruption", [r.get("mean_corruption_accuracy") for r in results]),
          ("extras", [r.get("extra_corruption_accuracy") for r in results])]
  attack_names = list(dict.fromkeys(a for r in results for a in _by_attack(r)))  # first seen
  # An L2 run's budgets are not L-inf ones: its columns carry the norm and hold only its runs.
  tags = sorted({_norm_tag(r, " ") for r in results})
  cols += [(f"{ATTACK_LABELS.get(a, a)}{t} {eps_label(e, with_value=True)}",
            [_by_attack(r).get(a, {}).get(e) if _norm_tag(r, " ") == t else None
             for r in results]) for t in tags for e in eps for a in attack_names]
  cols += [("worst group", [g.get("worst_group") for g in groups]),
           ("group average", [g.get("average") for g in groups])]
  cols = [(c, col) for c, col in cols if any(v is not None for v in col)]
  os.makedirs(out, exist_ok=True)
  paths = {kind: os.path.join(out, f"comparison.{kind}") for kind in ("md", "csv", "png")}
  rows = []
  with open(paths["csv"], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "workdir", "method", "dataset"] + [c for c, _ in cols] + ["train_seconds"])
    for i, (label, wd, r) in enumerate(zip(labels, workdirs, results)):
      vals = [col[i] for _, col in cols]
      ts = r.get("train_seconds")
      rows.append([label, r.get("dataset") or "-", *(pct(v) for v in vals),
                   "-" if ts is None else f"{float(ts):.0f}"])
      w.writerow([label, wd, r.get("method"), r.get("dataset")] +
                 ["" if v is None else v for v in vals] + ["" if ts is None else ts])
  with open(paths["md"], "w") as f:
    f.write("\n".join(["# Comparison (accuracy, %)", "",
                       *md_table(["run", "dataset", *(c for c, _ in cols), "train s"], rows)])
            + "\n")

  bar_chart({label: ([math.nan if col[i] is None else 100 * col[i] for _, col in cols], None)
             for i, label in enumerate(labels)}, [c for c, _ in cols], paths["png"],
            title="accuracy per run (no bar: not measured)")
  if any(r.get("corruption_accuracy") for r in results):
    paths["severity_png"] = plot_severity(dict(zip(labels, results)),
                                          os.path.join(out, "comparison_severity.png"),
                                          title="family mean accuracy vs severity")
  return paths


__all__ = ["REQUIRED_KEYS", "write_results", "read_results", "compare_runs", "results_markdown",
           "results_rows", "format_summary", "print_summary", "corruption_mean_scope",
           "pareto_front", "plot_severity", "plot_adversarial", "pyplot", "save_figure",
           "bar_chart", "scatter_plot"]
