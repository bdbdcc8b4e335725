"""How the experiments write numbers: percentages, eps budgets, mean ± 95% interval cells,
markdown tables.

One module for every table and summary (``reporting``, ``sweep``, the study reports), so a
number reads the same everywhere.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

# Two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (beyond that the normal's 1.960).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _missing(value: Any) -> bool:
  return value is None or math.isnan(float(value))


def pct(value: Any, *, digits: int = 2, sign: str = "", missing: str = "-") -> str:
  """A fraction in percent: ``pct(0.8312) == '83.12'``; ``sign='%'`` appends it.

  >>> pct(0.8312), pct(0.8312, digits=1, sign="%"), pct(None)
  ('83.12', '83.1%', '-')
  """
  if _missing(value):
    return missing
  return f"{100.0 * float(value):.{digits}f}{sign}"


def eps_label(key: Any, *, with_value: bool = False) -> str:
  """An L-inf budget: ``'8/255'`` where it is a whole number of 1/255 steps (with its value in
  parentheses when ``with_value``), else the number.

  >>> eps_label("0.03137254901960784"), eps_label(8 / 255, with_value=True), eps_label(0.05)
  ('8/255', '8/255 (0.03137)', '0.05')
  """
  eps = float(key)
  steps = eps * 255.0
  if eps > 0 and abs(steps - round(steps)) < 1e-3:
    return f"{round(steps)}/255" + (f" ({eps:.4g})" if with_value else "")
  return f"{eps:.4g}"


def attack_name(results: Any) -> str:
  """The attack of a ``results.json`` dict with its steps: ``'PGD-20'``, ``'SUITE'``.

  >>> attack_name({"adversarial": {"attack": "pgd", "num_steps": 20}}), attack_name({})
  ('PGD-20', 'PGD')
  """
  settings = results.get("adversarial") or {}
  steps = settings.get("num_steps")
  return str(settings.get("attack") or "pgd").upper() + (f"-{steps}" if steps else "")


def md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
  """A markdown table's lines: the header, the rule and one line per row (cells as ``str``).

  >>> md_table(["a", "b"], [[1, ""]])
  ['| a | b |', '|---|---|', '| 1 |  |']
  """

  def line(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"

  return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def t975(df: int) -> float:
  """The 0.975 quantile of Student's t with ``df`` >= 1 degrees of freedom."""
  if df < 1:
    raise ValueError(f"df must be >= 1, got {df}")
  return T975[df - 1] if df <= len(T975) else 1.960


def mean_ci(values: Sequence[float]) -> tuple[float, float | None, int]:
  """``(mean, 95% half-width or None when n < 2, n)`` of ``values`` (NaN/None dropped).

  >>> m, h, n = mean_ci([1.0, 2.0, 3.0])
  >>> m, round(h, 3), n
  (2.0, 2.484, 3)
  """
  vals = [float(v) for v in values if not _missing(v)]
  n = len(vals)
  if n == 0:
    return math.nan, None, 0
  mean = sum(vals) / n
  if n < 2:
    return mean, None, n
  sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
  return mean, t975(n - 1) * sd / math.sqrt(n), n


def ci_cell(cell: tuple[float, float | None, int], *, signed: bool = False, scale: float = 100.0,
            digits: int = 2, missing: str = "n/a") -> str:
  """A ``mean_ci`` cell, in percentage points by default: ``'83.12 ± 0.45'``, ``'83.12 (1
  seed)'``; ``missing`` without data. ``scale=1`` writes the number itself (seconds).

  >>> ci_cell((0.81234, 0.0045, 3)), ci_cell((-0.01, None, 1), signed=True)
  ('81.23 ± 0.45', '-1.00 (1 seed)')
  """
  mean, half, n = cell
  if n == 0 or _missing(mean):
    return missing
  text = f"{scale * mean:{'+' if signed else ''}.{digits}f}"
  return text + (f" ± {scale * half:.{digits}f}" if half is not None else " (1 seed)")


__all__ = ["pct", "eps_label", "attack_name", "md_table", "t975", "mean_ci", "ci_cell", "T975"]
