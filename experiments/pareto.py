"""The Pareto front of (clean, robust) accuracy: the sweep's table and every Pareto plot."""

from __future__ import annotations

from typing import Sequence


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
