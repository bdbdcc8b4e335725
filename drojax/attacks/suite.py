"""AutoAttack's standard version: the worst case over APGD-CE, APGD-T, FAB-T and Square.

L-inf or L2 (every attack in the same norm). Images are NHWC float in [0, 1].

Per example, the attacks run in order, each only on the examples every earlier one left
classified correctly; an example is robust only if it is clean-correct and survives all
four. Under ``jit`` each attack is computed on the whole batch with an ``active`` mask
instead of gathering the survivors (which would change shapes and recompile): an inactive
example's result is discarded, and each attack's loops stop early once every active example
is fooled, so the verdicts are the ones the sequential version gives. Over a dataset,
:func:`drojax.evaluate.auto_attack_accuracy` gathers each attack's survivors from all batches
into new batches instead, so a broken image costs nothing in the later attacks.

``attacks=`` runs a subset, still in the standard order. FAB-T runs with AutoAttack's
settings: ``num_steps`` iterations and ``num_targets`` targets, one restart, ``alpha_max``
0.1, ``eta`` 1.05, ``beta`` 0.9.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from drojax._checks import check_static_int
from drojax.attacks import auto, fab_attack, square_attack
from drojax.attacks.projected import (LogitsFn, _check_inputs, _check_number, _labels_valid,
                                      count_classes)

SUITE_ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
# FAB-T as AutoAttack's standard version runs it.
_FAB_ALPHA_MAX, _FAB_ETA, _FAB_BETA = 0.1, 1.05, 0.9


def attack_stage(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                 stage: str, eps: float | jax.Array, active: jax.Array, norm: str,
                 num_steps: int, num_targets: int, num_queries: int,
                 p_init: float | jax.Array, restarts: int = 1) -> jax.Array:
  """One attack of the suite on the ``active`` rows: the step a dataset evaluator repeats on
  each attack's survivors (:func:`drojax.evaluate.auto_attack_accuracy`).

  Unchecked and not jitted (call it inside your own ``jit``); :func:`robust_suite` is the
  checked entry point.

  Args:
    key: PRNG key of this attack.
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode.
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    stage: one of :data:`SUITE_ATTACKS` (static).
    eps: budget in pixel units (traced), of ``x``'s dtype.
    active: ``[B]`` bool, the rows to attack.
    norm, num_steps, num_targets, num_queries, p_init: as :func:`robust_suite` (the first
      four static); each attack reads only its own.
    restarts: APGD-CE restarts (static; the suite uses 1, as AutoAttack's standard version).

  Returns:
    ``[B]`` bool: active, clean-correct and not fooled (inactive rows False).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -1.0, 0.0, 0.0])
    >>> f = lambda z: z.mean((1, 2, 3))[:, None] * w[None] + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = jnp.array([0.9, 0.3, 0.9]).reshape(3, 1, 1, 1)  # margins .8, .1, .8
    >>> attack_stage(jax.random.key(0), f, x, jnp.array([0, 0, 0]), stage="apgd_ce",
    ...              eps=jnp.float32(0.1), active=jnp.array([True, True, False]), norm="linf",
    ...              num_steps=5, num_targets=0, num_queries=0, p_init=0.8).tolist()
    [True, False, False]
  """
  if stage not in SUITE_ATTACKS:
    raise ValueError(f"stage must be one of {SUITE_ATTACKS}; got {stage!r}.")
  if stage == "square":
    _, r = square_attack._square_run(key, logits_fn, x, y, eps, active, norm=norm,
                                     num_queries=num_queries, p_init=p_init)
  elif stage == "fab_t":
    _, r, _ = fab_attack._fab_runs(key, logits_fn, x, y, eps, active, _FAB_ALPHA_MAX, _FAB_ETA,
                                   _FAB_BETA, norm=norm, num_steps=num_steps, targeted=True,
                                   num_targets=num_targets, restarts=1, minimal=False)
  else:
    targeted = stage == "apgd_t"
    _, r = auto._apgd_runs(key, logits_fn, x, y, eps, active, norm=norm, num_steps=num_steps,
                           loss="dlr_targeted" if targeted else "ce",
                           restarts=1 if targeted else restarts,
                           num_targets=num_targets if targeted else 0)
  return r & active


def _suite_masks(key, logits_fn, x, y, eps, active, *, norm, num_steps, num_targets,
                 num_queries, p_init, attacks=SUITE_ATTACKS):
  """Cumulative verdicts; rows with ``active`` False (e.g. batch padding) count as broken.

  Attack ``stage`` uses ``fold_in(key, SUITE_ATTACKS.index(stage))`` whatever the subset.
  """
  y = y.astype(jnp.int32)
  eps = jnp.asarray(eps, x.dtype)
  robust = active & (jnp.argmax(logits_fn(x), axis=-1) == y)
  out = {"clean": robust}
  for i, stage in enumerate(SUITE_ATTACKS):
    if stage not in attacks:
      continue
    if stage != "square" or num_queries > 0:
      robust = attack_stage(jax.random.fold_in(key, i), logits_fn, x, y, stage=stage, eps=eps,
                            active=robust, norm=norm, num_steps=num_steps,
                            num_targets=num_targets, num_queries=num_queries, p_init=p_init)
    out[stage] = robust
  return out


_STATIC = ("logits_fn", "norm", "num_steps", "num_targets", "num_queries", "attacks")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _suite_impl(key, logits_fn, x, y, eps, p_init, *, norm, num_steps, num_targets,
                num_queries, attacks):
  return _suite_masks(key, logits_fn, x, y, eps, jnp.ones(x.shape[0], bool), norm=norm,
                      num_steps=num_steps, num_targets=num_targets, num_queries=num_queries,
                      p_init=p_init, attacks=attacks)


def _check_attacks(attacks) -> tuple[str, ...]:
  """``attacks`` as a tuple in the standard order, or a ValueError naming it."""
  if isinstance(attacks, str) or not all(isinstance(a, str) for a in attacks):
    raise ValueError(f"attacks must be a sequence of names from {SUITE_ATTACKS}; got "
                     f"{attacks!r}.")
  bad = [a for a in attacks if a not in SUITE_ATTACKS]
  if bad or not attacks or len(set(attacks)) != len(attacks):
    raise ValueError(f"attacks must be distinct names from {SUITE_ATTACKS}, at least one; got "
                     f"{tuple(attacks)!r}.")
  return tuple(a for a in SUITE_ATTACKS if a in attacks)


def check_suite_options(*, eps, norm, num_steps, num_targets, num_queries, p_init,
                        num_classes: int | None = None,
                        attacks: tuple[str, ...] = SUITE_ATTACKS) -> None:
  """Raises a ValueError naming the first bad suite option (shared with the evaluator).

  Args:
    eps: the budget (None: not checked); norm, num_steps, num_targets, num_queries, p_init:
      as :func:`robust_suite`.
    num_classes: the model's K (None: the K checks are skipped).
    attacks: the attacks that will run (a subset of SUITE_ATTACKS).

  Returns:
    None.

  Example:
    >>> check_suite_options(eps=8 / 255, norm="linf", num_steps=100, num_targets=9,
    ...                     num_queries=0, p_init=0.8)
    Traceback (most recent call last):
    ...
    ValueError: num_queries must be an int >= 1; got 0.
  """
  if eps is not None:
    _check_number(eps, "eps")
  if norm not in square_attack.SQUARE_NORMS:
    raise ValueError(f"norm must be one of {square_attack.SQUARE_NORMS} for the suite; got "
                     f"{norm!r}.")
  check_static_int("num_steps", num_steps, minimum=1)
  check_static_int("num_queries", num_queries, minimum=1)
  check_static_int("num_targets", num_targets, minimum=1)
  _check_number(p_init, "p_init", positive=True)
  if float(p_init) > 1:
    raise ValueError(f"p_init must be in (0, 1]; got {p_init!r}.")
  attacks = _check_attacks(attacks)
  if num_classes is not None:
    if num_classes < 4 and "apgd_t" in attacks:
      raise ValueError(f"the suite's APGD-T needs at least 4 classes; the model has "
                       f"{num_classes}.")
    if num_classes < 2:
      raise ValueError(f"the suite needs at least 2 classes; the model has {num_classes}.")
    if num_targets > num_classes - 1 and ("apgd_t" in attacks or "fab_t" in attacks):
      raise ValueError(f"num_targets must be <= K - 1 = {num_classes - 1}; got {num_targets}.")


def robust_suite(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                 eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
                 num_targets: int = 9, num_queries: int = 5000, p_init: float = 0.8,
                 attacks: Sequence[str] = SUITE_ATTACKS) -> dict[str, jax.Array]:
  """Per-example verdicts after each attack of the suite.

  Args:
    key: PRNG key (APGD-CE, APGD-T, FAB-T and Square use ``fold_in(key, 0 | 1 | 2 | 3)``,
      whichever subset runs).
    logits_fn: ``x [B, H, W, C] -> logits [B, K]`` in eval mode (static); K >= 4 when APGD-T
      runs.
    x: clean images ``[B, H, W, C]`` float in [0, 1].
    y: integer labels ``[B]``.
    eps: budget in pixel units in the chosen norm, >= 0 (traced).
    norm: ``'linf'`` or ``'l2'`` (static; every attack of the suite uses it, as AutoAttack's
      standard L2 version does).
    num_steps: APGD and FAB-T iterations (CE and each target).
    num_targets: APGD-T and FAB-T target classes, <= K - 1.
    num_queries: Square's queries per example.
    p_init: Square's initial square size.
    attacks: the attacks to run, a subset of ``SUITE_ATTACKS`` (static); they run in the
      standard order whatever the order given.

  Returns:
    ``{'clean', *attacks}`` -> ``[B]`` bool: still correct after the clean check and after
    each attack (cumulative: each implies the previous), in the standard order.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -1.0, 0.0, 0.0])
    >>> f = lambda z: z.mean((1, 2, 3))[:, None] * w[None] + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = jnp.array([0.9, 0.3, 0.1, 0.2]).reshape(4, 1, 1, 1)  # margins .8, .1, .3, -.1
    >>> m = robust_suite(jax.random.key(0), f, x, jnp.array([0, 0, 1, 0]), eps=0.1,
    ...                  num_steps=5, num_targets=3, num_queries=20)  # eps moves a margin by .2
    >>> for name, robust in m.items():
    ...   print(name, robust.tolist())
    clean [True, True, True, False]
    apgd_ce [True, False, True, False]
    apgd_t [True, False, True, False]
    fab_t [True, False, True, False]
    square [True, False, True, False]
  """
  _check_inputs(x, y, "robust_accuracy_suite", logits_fn)
  if not callable(logits_fn):
    raise TypeError(f"robust_accuracy_suite: logits_fn must be callable x -> logits; got "
                    f"{type(logits_fn).__name__}.")
  attacks = _check_attacks(attacks)
  check_suite_options(eps=eps, norm=norm, num_steps=num_steps, num_targets=num_targets,
                      num_queries=num_queries, p_init=p_init,
                      num_classes=count_classes(logits_fn, x), attacks=attacks)
  masks = _suite_impl(key, logits_fn, x, y, eps, jnp.float32(p_init), norm=norm,
                      num_steps=num_steps, num_targets=num_targets,
                      num_queries=int(num_queries), attacks=attacks)
  return {k: masks[k] for k in ("clean",) + attacks}  # jit sorts dict keys


def robust_accuracy_suite(key: jax.Array, logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                          eps: float | jax.Array, norm: str = "linf", num_steps: int = 100,
                          num_targets: int = 9, num_queries: int = 5000, p_init: float = 0.8,
                          attacks: Sequence[str] = SUITE_ATTACKS) -> dict[str, jax.Array]:
  """Robust accuracy under the suite, overall and after each attack.

  Args:
    key, logits_fn, x, y, eps, norm, num_steps, num_targets, num_queries, p_init, attacks: as
      :func:`robust_suite`.

  Returns:
    ``{'clean', *attacks, 'robust'}`` -> float32 scalars: the accuracy after the clean check
    and cumulatively after each attack; ``'robust'`` equals the last attack's, the
    per-example worst case over all of them.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([1.0, -1.0, 0.0, 0.0])
    >>> f = lambda z: z.mean((1, 2, 3))[:, None] * w[None] + jnp.array([[0.0, 0.5, 0.1, 0.0]])
    >>> x = jnp.array([0.9, 0.3, 0.1, 0.2]).reshape(4, 1, 1, 1)  # margins .8, .1, .3, -.1
    >>> r = robust_accuracy_suite(jax.random.key(0), f, x, jnp.array([0, 0, 1, 0]), eps=0.1,
    ...                           num_steps=5, num_targets=3, num_queries=20)
    >>> {k: float(v) for k, v in r.items()}
    {'clean': 0.75, 'apgd_ce': 0.5, 'apgd_t': 0.5, 'fab_t': 0.5, 'square': 0.5, 'robust': 0.5}
  """
  masks = robust_suite(key, logits_fn, x, y, eps=eps, norm=norm, num_steps=num_steps,
                       num_targets=num_targets, num_queries=num_queries, p_init=p_init,
                       attacks=attacks)
  valid = jnp.all(_labels_valid(y, count_classes(logits_fn, x)))
  out = {k: jnp.where(valid, jnp.mean(v.astype(jnp.float32)), jnp.nan) for k, v in masks.items()}
  out["robust"] = out[list(masks)[-1]]
  return out


__all__ = ["SUITE_ATTACKS", "attack_stage", "check_suite_options", "robust_suite",
           "robust_accuracy_suite"]
