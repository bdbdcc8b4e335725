"""Adversarial accuracy over a dataset: PGD at each budget, and APGD-CE or the worst-case
suite (APGD-CE, APGD-T, Square) with each attack run on the survivors gathered from all batches.

An example counts as robust only if it is classified correctly clean and under every restart
(and, for the suite, every attack). Images are NHWC uint8 (divided by 255) or float in [0, 1];
budgets are in pixel units.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax import _checks, attacks
from drojax.evaluate.batching import (Model, as_apply, batches, check_arrays, eval_key,
                                      float_batch, padded, progress_bar)
from drojax.evaluate.share import ALONE, Share

SQUARE_P_INIT = 0.8  # Square's initial square size in the suite (AutoAttack's standard version)


def eps_key(eps: float) -> str:
  """The JSON key of a budget: ``'%.6g'`` of the pixel-space eps.

  Args:
    eps: the budget in pixel units.

  Returns:
    Its key in ``adversarial_accuracy`` dicts.

  Example:
    >>> eps_key(8 / 255)
    '0.0313725'
  """
  return f"{float(eps):.6g}"


@functools.lru_cache(maxsize=64)
def _jit_attack(apply_fn: Callable, num_steps: int, norm: str, random_start: bool, restarts: int,
                unroll: bool | None) -> Callable:
  def robust(variables, key, x, y, eps, step_size):
    _, r = attacks.pgd_robust(key, functools.partial(apply_fn, variables), x, y, eps=eps,
                              step_size=step_size, num_steps=num_steps, norm=norm,
                              random_start=random_start, restarts=restarts, unroll=unroll)
    return r
  return jax.jit(robust)


def adversarial_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                         eps: Sequence[float], num_steps: int = 20,
                         step_size: float | Sequence[float] | None = None,
                         norm: str = "linf", random_start: bool = True, restarts: int = 1,
                         unroll: bool | None = None, key: jax.Array | None = None,
                         batch_size: int = 256, progress: bool = True,
                         share: Share = ALONE) -> dict[str, float]:
  """PGD robust accuracy at each budget in ``eps`` (pixel space).

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    eps: budgets, e.g. ``(4/255, 8/255, 16/255)``; 0 gives the clean accuracy.
    num_steps: PGD steps.
    step_size: one step for every eps, one per eps, or None for ``eps / 8`` (the DRO-Augment
      Fashion-MNIST recipe: 0.5/255 at 4/255, 20 steps).
    norm: ``'linf'`` or ``'l2'``.
    random_start: uniform start in the ball.
    restarts: random restarts (an example is robust only if it survives all).
    unroll: PGD loop form (see :func:`drojax.attacks.default_unroll`).
    key: PRNG key (default :func:`eval_key`); batch ``b`` uses ``fold_in(key, b)``.
    batch_size: rows per call.
    progress: show a progress bar.
    share: this process's batches (:mod:`drojax.evaluate.share`).

  Returns:
    ``{eps_key(eps): accuracy}``.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
    >>> x = np.array([0.9, 0.7], np.float32).reshape(2, 1, 1, 1)  # fooled past 0.4, 0.2
    >>> adversarial_accuracy(f, x, np.array([1, 1]), eps=[0.0, 0.3, 0.5], num_steps=5,
    ...                      step_size=[0.1, 0.15, 0.25], progress=False)
    {'0': 1.0, '0.3': 0.5, '0.5': 0.0}
  """
  images, labels = check_arrays(images, labels, "adversarial_accuracy", model)
  batch_size = _checks.check_static_int("batch_size", batch_size, minimum=1)
  eps = [float(e) for e in eps]
  if any(e < 0 or math.isnan(e) for e in eps):
    raise ValueError(f"eps must be >= 0; got {eps}.")
  if step_size is None:
    steps = [e / 8 for e in eps]
  elif isinstance(step_size, (int, float)):
    steps = [float(step_size)] * len(eps)
  else:
    steps = [float(s) for s in step_size]
    if len(steps) != len(eps):
      raise ValueError(f"step_size must be one number or one per eps ({len(eps)}); got "
                       f"{len(steps)}.")
  attacks.check_pgd_options(norm=norm, num_steps=num_steps, restarts=restarts)
  key = eval_key() if key is None else key
  apply_fn, variables = as_apply(model)
  fn = _jit_attack(apply_fn, num_steps, norm, bool(random_start), restarts, unroll)
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  spans = batches(n, bs)
  mine = share.mine(len(spans))
  robust = np.zeros((len(eps),), np.int64)
  with progress_bar(len(eps) * len(mine), f"PGD-{num_steps} {norm}", progress) as bar:
    for i, (e, st) in enumerate(zip(eps, steps)):
      bar.set_postfix_str(f"eps={e:.4g}")
      for b in mine:
        s, t = spans[b]
        x = float_batch(images, s, t, bs)
        y = padded(labels[s:t].astype(np.int32), bs)
        r = fn(variables, jax.random.fold_in(key, b), x, y, np.float32(e), np.float32(st))
        robust[i] += int(np.sum(np.asarray(r)[: t - s]))
        bar.update(1)
  robust = share.total(robust)
  return {eps_key(e): int(robust[i]) / n if n else math.nan for i, e in enumerate(eps)}


ATTACKS = ("pgd", "apgd", "suite")
ATTACK_LABELS = {"pgd": "PGD", "apgd_ce": "APGD-CE", "apgd_t": "APGD-T", "fab_t": "FAB-T",
                 "square": "Square"}


@functools.lru_cache(maxsize=64)
def _jit_attack_stage(apply_fn: Callable, stage: str, num_steps: int, num_targets: int,
                      num_queries: int, restarts: int, norm: str) -> Callable:
  """One attack on one batch: ``robust(variables, key, x, y, eps, n_valid) -> [B] bool``.

  ``stage`` is one of ``attacks.SUITE_ATTACKS``; rows ``>= n_valid`` (padding) come back False.
  """
  def robust(variables, key, x, y, eps, n_valid):
    return attacks.attack_stage(
        key, functools.partial(apply_fn, variables), x, y, stage=stage,
        eps=jnp.asarray(eps, x.dtype), active=jnp.arange(x.shape[0]) < n_valid, norm=norm,
        num_steps=num_steps, num_targets=num_targets, num_queries=num_queries,
        p_init=SQUARE_P_INIT, restarts=restarts)
  return jax.jit(robust)


def survivor_batches(rows: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """Splits row indices into batches of ``batch_size``; ``[(rows_b, padded_size_b)]``.

  A short last batch is padded only up to the smallest of ``batch_size`` / 8, / 4, / 2, / 1
  (rounded up) that holds it: at most four shapes per attack to compile, at most twice the
  rows computed.
  """
  sizes = sorted({-(-batch_size // d) for d in (8, 4, 2, 1)})
  out = []
  for s in range(0, len(rows), batch_size):
    chunk = rows[s:s + batch_size]
    out.append((chunk, next(z for z in sizes if z >= len(chunk))))
  return out


def auto_attack_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                         eps: Sequence[float], attack: str = "suite", num_steps: int = 100,
                         num_targets: int | None = None, num_queries: int = 5000,
                         restarts: int = 1,
                         norm: str = "linf", key: jax.Array | None = None,
                         batch_size: int = 256, progress: bool = True,
                         share: Share = ALONE) -> dict[str, dict[str, float]]:
  """Robust accuracy under APGD-CE alone or the worst-case suite, at each budget.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    eps: budgets in pixel units (0 gives the clean accuracy).
    attack: ``'apgd'`` (APGD-CE, ``restarts`` restarts) or ``'suite'`` (APGD-CE, APGD-T,
      FAB-T, Square: AutoAttack's standard version; the verdicts of
      :func:`drojax.attacks.robust_suite`). As AutoAttack does, each
      attack of the suite runs only on the images every earlier one left robust, gathered
      from all batches into new ones, so an image a cheap attack breaks costs nothing later.
    num_steps: APGD and FAB-T iterations; num_targets: APGD-T and FAB-T targets (<= K - 1;
      K >= 4), None for ``min(9, K - 1)`` (AutoAttack's 9 on 10 classes);
    num_queries: Square's queries; restarts: APGD-CE restarts (``'apgd'`` only).
    norm: ``'linf'`` or ``'l2'`` (for the suite, all four attacks in that norm).
    key: PRNG key (default :func:`eval_key`); the ``j``-th batch of an attack uses
      ``fold_in(key, j)`` (``'apgd'``), or ``fold_in(fold_in(key, j), i)`` for the suite's
      ``i``-th attack (0 APGD-CE, 1 APGD-T, 2 FAB-T, 3 Square).
    batch_size: rows per call (a short last batch is padded to ``batch_size`` / 8, / 4, / 2
      or / 1, the smallest that holds it); progress: show a progress bar.
    share: this process's batches of each attack (:mod:`drojax.evaluate.share`); the
      survivors of an attack are gathered from every process before the next attack's batches
      are formed, so each attack runs only on images every earlier one left robust, as on one
      process.

  Returns:
    ``{attack_name: {eps_key(eps): accuracy}}`` with names ``'apgd_ce'`` (and ``'apgd_t'``,
    ``'fab_t'``, ``'square'`` for the suite): the accuracy after that attack, cumulative, so
    the last
    is the worst case.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> w = jnp.array([[1.0, -1.0, 0.0, 0.0]])
    >>> f = lambda x: x.mean((1, 2, 3))[:, None] * w + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = np.array([0.9, 0.3], np.float32).reshape(2, 1, 1, 1)  # margins .8, .1
    >>> auto_attack_accuracy(f, x, np.array([0, 0]), eps=[0.1], num_steps=5, num_targets=3,
    ...                      num_queries=10, progress=False)
    {'apgd_ce': {'0.1': 0.5}, 'apgd_t': {'0.1': 0.5}, 'fab_t': {'0.1': 0.5}, 'square': {'0.1': 0.5}}
  """
  images, labels = check_arrays(images, labels, "auto_attack_accuracy", model)
  batch_size = _checks.check_static_int("batch_size", batch_size, minimum=1)
  if attack not in ("apgd", "suite"):
    raise ValueError(f"attack must be 'apgd' or 'suite'; got {attack!r}.")
  eps = [float(e) for e in eps]
  if any(e < 0 or math.isnan(e) for e in eps):
    raise ValueError(f"eps must be >= 0; got {eps}.")
  if attack == "suite":
    attacks.check_suite_options(eps=None, norm=norm, num_steps=num_steps,
                                num_targets=1 if num_targets is None else num_targets,
                                num_queries=num_queries, p_init=SQUARE_P_INIT)
  else:
    attacks.check_pgd_options(norm=norm, num_steps=num_steps, restarts=restarts)
    _checks.check_static_int("num_steps", num_steps, minimum=1)
  key = eval_key() if key is None else key
  apply_fn, variables = as_apply(model)
  n = images.shape[0]
  bs = min(batch_size, max(n, 1))
  if attack == "suite" and n:
    k = attacks.count_classes(functools.partial(apply_fn, variables),
                              jnp.zeros((1,) + images.shape[1:], jnp.float32))
    if num_targets is None:
      num_targets = max(1, min(9, k - 1))
    attacks.check_suite_options(eps=None, norm=norm, num_steps=num_steps,
                                num_targets=num_targets, num_queries=num_queries,
                                p_init=SQUARE_P_INIT, num_classes=k)
  stages = ("apgd_ce",) if attack == "apgd" else attacks.SUITE_ATTACKS
  fns = {a: _jit_attack_stage(apply_fn, a,
                              0 if a == "square" else num_steps,
                              num_targets if a in ("apgd_t", "fab_t") else 0,
                              num_queries if a == "square" else 0,
                              restarts if attack == "apgd" else 1, norm)
         for a in stages}
  out: dict[str, dict[str, float]] = {a: {} for a in stages}
  desc = f"APGD-CE-{num_steps}" if attack == "apgd" else (
      f"suite (APGD-CE/T-{num_steps}, FAB-T-{num_steps}, Square-{num_queries})")
  with progress_bar(len(eps) * len(share.mine(len(batches(n, bs)))), f"{desc} {norm}",
                    progress) as bar:
    for e in eps:
      bar.set_postfix_str(f"eps={e:.4g}")
      rows = np.arange(n)
      for i, a in enumerate(stages):
        # Each attack sees only the rows every earlier one left robust, gathered into full
        # batches (AutoAttack's order); masking them inside one batch would cost as much as
        # attacking all of them.
        chunks = survivor_batches(rows, bs)
        mine = share.mine(len(chunks))
        if i:
          bar.total += len(mine)
          bar.refresh()
        kept = np.zeros((n,), np.int64)
        for j in mine:
          chunk, size = chunks[j]
          x = padded(_checks.to_unit_float("images", np.asarray(images[chunk])), size)
          y = padded(labels[chunk].astype(np.int32), size)
          kb = jax.random.fold_in(key, j)
          if attack == "suite":
            kb = jax.random.fold_in(kb, i)
          r = np.asarray(fns[a](variables, kb, x, y, np.float32(e), np.int32(len(chunk))))
          kept[chunk[r[:len(chunk)]]] = 1
          bar.update(1)
        rows = rows[share.total(kept)[rows] > 0]  # in order: the next batches are the same
        out[a][eps_key(e)] = len(rows) / n if n else math.nan
  return out


__all__ = ["ATTACKS", "ATTACK_LABELS", "eps_key", "adversarial_accuracy", "survivor_batches",
           "auto_attack_accuracy"]
