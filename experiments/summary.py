"""The few lines every CLI run ends with: the headline accuracies, training time, the files.

A run's tables and plots are in its workdir; this says what they hold without opening them::

  == dro_augmix on digits (quick): clean 93.9% | mean corruption 81.2% (10 standard corruptions x
     severities 1,3,5) | PGD-5 eps 2/255 60.4%, 8/255 9.1% | training 71 s, 220 steps
     tables: runs/quick_dro_augmix/results.md
     plots:  runs/quick_dro_augmix/accuracy_vs_severity.png runs/quick_dro_augmix/adversarial.png
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

from experiments.formatting import attack_name, eps_label, pct

# The plots experiments.reporting.write_results writes into a run's workdir, in display order.
_PLOT_FILES = ("accuracy_vs_severity.png", "adversarial.png")

# Console style: one decimal with the sign.
_pct = functools.partial(pct, digits=1, sign="%", missing="n/a")


def corruption_mean_scope(accuracy: Mapping[str, Mapping[str, Any]]) -> str:
  """What ``mean_corruption_accuracy`` averages for ``corruption_accuracy`` = ``accuracy``:
  e.g. ``10 standard corruptions x severities 1,3,5`` (the extras are not in the mean)."""
  from drojax.corruptions.tables import STANDARD_NAMES

  standard = [n for n in accuracy if n in STANDARD_NAMES]
  severities = sorted({int(s) for n in standard for s in accuracy[n]})
  noun = "corruption" if len(standard) == 1 else "corruptions"
  return (f"{len(standard)} standard {noun} x "
          f"severit{'y' if len(severities) == 1 else 'ies'} {','.join(map(str, severities))}")


def format_summary(results: Mapping[str, Any], workdir: str) -> str:
  """The end-of-run summary (a few lines, no trailing newline) of ``results`` (the
  ``results.json`` dict; missing keys are left out or "n/a") written to ``workdir`` (only the
  files that exist there are listed)."""
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
    items = sorted(adv.items(), key=lambda kv: float(kv[0]))
    parts.append(f"{attack_name(results)} eps " +
                 ", ".join(f"{eps_label(k)} {_pct(v)}" for k, v in items))
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
  plots = [os.path.join(workdir, p) for p in _PLOT_FILES
           if os.path.isfile(os.path.join(workdir, p))]
  if plots:
    lines.append("   plots:  " + " ".join(plots))
  return "\n".join(lines)


def print_summary(results: Mapping[str, Any], workdir: str) -> None:
  """Prints :func:`format_summary` (flushed, so it follows the progress bars)."""
  print(format_summary(results, workdir), flush=True)


__all__ = ["format_summary", "print_summary"]
