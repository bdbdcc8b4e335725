"""Severity calibration: continuous corruption severities whose accuracies fall linearly.

The refined benchmark of DRO-Augment re-tuned each corruption's parameters so that a reference
model's accuracy drops about linearly with severity, at the same rate for every type. For a
model, clean accuracy ``a_0`` and a floor, the targets are ``t_k = a_0 - (k / 5) (a_0 - floor)``
(``k = 1..5``); per corruption and ``k``, a bisection on the continuous severity ``s`` of
:func:`drojax.corruptions.corrupt` (parameters interpolated between the table's rows, row 0
the identity) finds where the accuracy meets ``t_k``. The severity is traced under ``jit``: one
compilation per corruption, not per bisection step. Images are NHWC uint8 (divided by 255) or
float in [0, 1]; one channel is repeated to RGB (the corruptions are defined on RGB).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax import _checks
from drojax.evaluate.batching import Model, batches, padded, predictor
from drojax.evaluate.clean import clean_accuracy
from drojax.evaluate.corruption import jit_corrupt_traced

NUM_SEVERITIES = 5


def target_accuracies(clean: float, floor: float, *, num_severities: int = NUM_SEVERITIES
                      ) -> list[float]:
  """Linear targets ``t_k = clean - (k / n) (clean - floor)`` for ``k = 1..n``.

  Args:
    clean: the clean accuracy ``a_0``.
    floor: the target at severity ``n``.
    num_severities: ``n``.

  Returns:
    ``[t_1, ..., t_n]``.

  >>> [round(t, 3) for t in target_accuracies(0.9, 0.4)]
  [0.8, 0.7, 0.6, 0.5, 0.4]
  """
  return [clean - (k / num_severities) * (clean - floor) for k in range(1, num_severities + 1)]


def solve_monotone(acc_fn: Callable[[float], float], target: float, lo: float, hi: float, *,
                   iterations: int = 7, known: Mapping[float, float] | None = None
                   ) -> tuple[float, float, bool]:
  """Bisection for ``acc_fn(s) = target`` with ``acc_fn`` non-increasing on ``[lo, hi]``.

  Bisects assuming monotonicity, then returns, among every point evaluated (and the ``known``
  evaluations inside ``[lo, hi]``), the one whose accuracy is closest to the target (ties: the
  smaller ``s``), so a curve that is only roughly monotone (glass blur, elastic, frost,
  saturate and spatter are not monotone in pixel distance; small evaluation sets add noise)
  still gets its best evaluated point. ``capped`` says that no evaluated point reached the
  target (all stayed above it).

  Args:
    acc_fn: ``s -> accuracy``, assumed non-increasing.
    target: the accuracy to reach.
    lo, hi: the search interval.
    iterations: bisection steps after the end points (resolution ``(hi - lo) / 2^iterations``).
    known: earlier evaluations ``{s: accuracy}`` to consider too (e.g. the integer
      severities).

  Returns:
    ``(s, acc_fn(s), capped)``.

  >>> s, a, capped = solve_monotone(lambda s: 1 - s / 5, 0.5, 0.0, 5.0, iterations=10)
  >>> round(s, 2), capped
  (2.5, False)
  """
  evaluated = {float(k): float(v) for k, v in (known or {}).items() if lo <= k <= hi}

  def f(s):
    if s not in evaluated:
      evaluated[s] = float(acc_fn(s))
    return evaluated[s]

  if f(hi) <= target < f(lo):
    a, b = lo, hi
    for _ in range(iterations):
      mid = 0.5 * (a + b)
      if f(mid) > target:
        a = mid
      else:
        b = mid
  capped = min(evaluated.values()) > target
  best = min(evaluated, key=lambda s: (abs(evaluated[s] - target), s))
  return best, evaluated[best], capped


def _rgb_float(images: Any) -> np.ndarray:
  x = _checks.to_unit_float("images", np.asarray(images))
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"images must be [N, H, W, C] with 1 or 3 channels; got shape "
                     f"{np.shape(images)}.")
  return x


def accuracy_at_severity(key: jax.Array, model: Model, images: Any, labels: Any, name: str, *,
                         table: str, batch_size: int = 256) -> Callable[[float], float]:
  """``s -> accuracy`` of ``model`` on ``images`` corrupted by ``name`` at continuous
  severity ``s`` of ``table``, with ``fold_in(key, b)`` for batch ``b`` at every ``s`` (the
  corruption noise is common to all strengths).

  Args:
    key: PRNG key of the corruption.
    model: ``logits_fn(x) -> [B, K]`` or a :class:`~drojax.evaluate.BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1] (C = 1 is repeated to RGB).
    labels: ``[N]`` integer labels.
    name: the corruption.
    table: the severity table whose rows define the path.
    batch_size: rows per call (the last batch is padded).

  Returns:
    The accuracy function (one compilation for every ``s``).
  """
  pred = predictor(model)
  fn = jit_corrupt_traced(name, table)
  x, labels = _rgb_float(images), np.asarray(labels)
  n = x.shape[0]
  size = min(_checks.check_static_int("batch_size", batch_size, minimum=1), n)
  spans = batches(n, size)
  chunks = [padded(x[s:e], size) for s, e in spans]

  def acc(s: float) -> float:
    correct = 0
    for b, ((s0, e0), xb) in enumerate(zip(spans, chunks)):
      xc = fn(jax.random.fold_in(key, b), xb, jnp.float32(s))
      correct += int(np.sum(pred(xc)[: e0 - s0] == labels[s0:e0]))
    return correct / n
  return acc


def calibrate(key: jax.Array, model: Model, images: Any, labels: Any, *,
              names: Sequence[str] | None = None, base_table: str = "standard",
              floor: float | None = None, iterations: int = 7, batch_size: int = 256,
              log: Callable[[str], Any] | None = None) -> dict[str, Any]:
  """Chooses, per corruption, continuous severities whose accuracies follow linear targets.

  For each corruption and ``k = 1..5`` it bisects on ``s`` in ``[s_{k-1}, 5]`` until the
  accuracy meets ``t_k`` (:func:`solve_monotone`, the integer severities' accuracies
  included); where no point gets down to a target, the row is capped: the interpolation does
  not extrapolate past the table's severity 5 (use a harder ``base_table`` or a higher
  ``floor``).

  Args:
    key: PRNG key of the corruptions (``fold_in(key, i)`` for the ``i``-th name, the same for
      every strength of it).
    model: ``logits_fn(x) -> [B, K]`` or a :class:`~drojax.evaluate.BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1] (C = 1 is repeated to RGB).
    labels: ``[N]`` integer labels.
    names: corruptions (default: the 15 standard ones).
    base_table: the table whose rows define the continuous severity path.
    floor: target accuracy at severity 5 (default: the mean base-table severity-5 accuracy, so
      the severity-5 difficulty is kept on average and equalized across types).
    iterations: bisection steps per severity.
    batch_size: rows per call.
    log: called with one line per corruption before and after (None: silent).

  Returns:
    A JSON-ready dict: ``clean_accuracy``, ``floor``, ``targets``, ``base_table``,
    ``num_images``, ``iterations``, ``corruptions`` ``{name: {severity [5], params [5][P],
    before [5], after [5], capped [5]}}``, ``mean_abs_error_before`` / ``_after``.
  """
  from drojax import corruptions

  names = tuple(corruptions.STANDARD_NAMES if not names else names)
  for n_ in names:
    corruptions.tables.check_name(n_)
  corruptions.tables.check_table(base_table)
  _checks.check_static_int("iterations", iterations, minimum=1)
  log = log or (lambda line: None)
  x, labels = _rgb_float(images), np.asarray(labels)
  clean = clean_accuracy(model, x, labels, batch_size=batch_size, progress=False)
  ints = [float(k) for k in range(1, NUM_SEVERITIES + 1)]
  cached = {}
  for i, name in enumerate(names):
    acc = accuracy_at_severity(jax.random.fold_in(key, i), model, x, labels, name,
                               table=base_table, batch_size=batch_size)
    cached[name] = (acc, {s: acc(s) for s in ints})
    log(f"  {name}: before " + " ".join(f"{100 * a:.1f}" for a in cached[name][1].values()))
  if floor is None:
    floor = float(np.mean([cached[n_][1][ints[-1]] for n_ in names]))
  targets = target_accuracies(clean, floor)
  rows = {}
  for name in names:
    acc, seen = cached[name]
    before = [seen[s] for s in ints]

    def memo(s, _acc=acc, _seen=seen):
      if s not in _seen:
        _seen[s] = _acc(s)
      return _seen[s]

    lo, sev, after, capped = 0.0, [], [], []
    for t in targets:
      s, a, c = solve_monotone(memo, t, lo, float(NUM_SEVERITIES), iterations=iterations,
                               known=seen)
      sev.append(s)
      after.append(a)
      capped.append(c)
      lo = s
    params = [[float(v) for v in corruptions.params_at(name, float(s), base_table)]
              for s in sev]
    rows[name] = {"severity": sev, "params": params, "before": before, "after": after,
                  "capped": capped}
    log(f"  {name}: after  " + " ".join(f"{100 * a:.1f}" for a in after) +
        f"  (severity {' '.join(f'{s:.2f}' for s in sev)})")
  err = lambda k: float(np.mean([abs(a - t) for r in rows.values()
                                 for a, t in zip(r[k], targets)]))
  return {"clean_accuracy": clean, "floor": floor, "targets": targets,
          "base_table": base_table, "num_images": int(x.shape[0]), "iterations": iterations,
          "corruptions": rows, "mean_abs_error_before": err("before"),
          "mean_abs_error_after": err("after")}


__all__ = ["NUM_SEVERITIES", "target_accuracies", "solve_monotone", "accuracy_at_severity",
           "calibrate"]
