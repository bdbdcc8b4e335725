"""Var-DRO example weighting: water-filling, an online variance tracker, radius schedules.

Var-DRO (arXiv 2511.05568) gives example ``i`` of a mini-batch of ``B`` examples a radius
``eps_i >= 0`` and solves, per mini-batch, the linear program

.. math::

  \\max_q \\sum_i q_i \\ell_i \\quad \\text{s.t.} \\quad \\sum_i q_i = 1, \\quad
  e^{-\\epsilon_i} / B \\le q_i \\le e^{\\epsilon_i} / B,

whose solution is found by water-filling (sort, cumulative sum, clip): every example starts at its
lower bound and the remaining mass is poured into the highest losses up to their upper bounds.
The radii come from a per-example exponential moving average (EMA) of the loss variance,
normalized within the batch, with a warm-up and a linear ramp of the largest radius. Per step
the paper's order is: losses -> ``update_tracker`` -> radii from the updated variances ->
water-filling (``drojax.objectives.var_dro`` follows it).

Everything here is pure: arrays in, arrays out; the tracker is a pytree (``TrackerState``).
The module imports JAX only (no Flax, Optax, Orbax or TensorFlow Datasets). The library's images
are NHWC float32 in [0, 1], but this module only sees per-example losses.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_float as _check_float_array
from drojax._checks import check_finite as _check_finite
from drojax._checks import check_nonnegative as _check_nonnegative
from drojax._checks import check_int_range, check_static_int
from drojax._checks import is_concrete as _is_concrete
from drojax._checks import renamed

__all__ = [
    "TrackerState",
    "eps_max_schedule",
    "init_tracker",
    "loss_scaled_eps_max",
    "radii",
    "tracked_rows",
    "update_tracker",
    "var_dro_weights",
    "water_filling",
]


# ----------------------------------------------------------------------------------------------
# Water-filling.


# Up to this batch size the thresholds are computed by O(B^2) comparisons instead of a sort:
# XLA's CPU sort costs ~20 us at B=128 where the comparisons cost ~8 us
# (benchmarks/water_filling.py).
_DENSE_MAX_B = 256


def _water_filling(losses: jax.Array, eps: jax.Array, method: str | None = None) -> jax.Array:
  """Unguarded solver; see ``water_filling``. ``method``: None (by size), "dense" or "sort".

  Overflow-free for every radius in [0, inf]: ``e^eps`` is never formed. The room of example
  ``i`` above its lower bound, ``(e^eps_i - e^-eps_i)/B = 2 sinh(eps_i)/B``, is kept as its log
  and capped at the budget ``R`` (room beyond ``R`` can never be filled, so the cap leaves every
  threshold unchanged and keeps all sums finite); the split inside a tie group uses the uncapped
  rooms as ratios ``exp(log room_i - max log room)``. A negative (or NaN) radius, possible only
  under ``jit`` where values are not checked, gives NaN weights.
  """
  b = losses.shape[0]
  dtype = jnp.result_type(losses.dtype, eps.dtype)
  losses = losses.astype(dtype)
  eps = jnp.broadcast_to(eps.astype(dtype), (b,))
  lower = jnp.exp(-eps) / b
  # R = 1 - sum(e^-eps)/B, written with expm1 so that small radii do not cancel.
  budget = jnp.sum(-jnp.expm1(-eps)) / b
  log_room = eps + jnp.log(-jnp.expm1(-2.0 * eps)) - np.log(b)  # -inf at eps=0, inf at eps=inf
  room = jnp.minimum(jnp.exp(log_room), budget)
  neg_inf = jnp.asarray(-jnp.inf, dtype)
  if method is None:
    method = "dense" if b <= _DENSE_MAX_B else "sort"

  if method == "dense":
    # before_i = room of strictly larger losses, group_i = room of the losses equal to l_i.
    # (A masked sum, not a matmul: accelerators may run float32 matmuls in reduced precision.)
    larger = losses[None, :] > losses[:, None]
    equal = losses[None, :] == losses[:, None]
    before = jnp.sum(jnp.where(larger, room[None, :], 0.0), axis=1)
    group = jnp.sum(jnp.where(equal, room[None, :], 0.0), axis=1)
    top = jnp.max(jnp.where(equal, log_room[None, :], neg_inf), axis=1)  # per tie group
    ratio = jnp.exp(jnp.where(log_room == top, 0.0, log_room - top))  # inf - inf -> 0
    ratio_sum = jnp.sum(jnp.where(equal, ratio[None, :], 0.0), axis=1)
  elif method == "sort":
    # Descending order of loss; a stable sort keeps equal losses in index order, and ties are
    # then merged into groups so the result does not depend on that order.
    order = jnp.argsort(-losses, stable=True)
    neg_sorted = -losses[order]  # ascending
    cum = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(room[order])])  # [B + 1]
    # First sorted position of the group of equal losses around each sorted position.
    start = jnp.searchsorted(neg_sorted, neg_sorted, side="left")
    unsort = jnp.zeros((b,), jnp.int32).at[order].set(jnp.arange(b, dtype=jnp.int32),
                                                       unique_indices=True)
    gid = start[unsort]  # each example's tie-group id (its first sorted position)
    before = cum[gid]  # room of strictly larger losses
    # Summed per group, not as a difference of cumulative sums: a full group then gets exactly
    # its room (the difference would carry the rounding of everything before it).
    group = jax.ops.segment_sum(room, gid, num_segments=b)[gid]
    top = jax.ops.segment_max(log_room, gid, num_segments=b)[gid]
    ratio = jnp.exp(jnp.where(log_room == top, 0.0, log_room - top))
    ratio_sum = jax.ops.segment_sum(ratio, gid, num_segments=b)[gid]
  else:
    raise ValueError(f"method must be None, 'dense' or 'sort', got {method!r}.")
  fill = jnp.clip(budget - before, 0.0, group)  # mass poured into the tie group
  # Inside a tie group the mass is shared in proportion to room (the same fraction of room for
  # every member), which is symmetric in the members; ratio_sum >= 1 (the group's top has 1).
  q = lower + fill * (ratio / ratio_sum)
  return jnp.where(jnp.any(~(eps >= 0)), jnp.nan, q)


def water_filling(losses: jax.Array, eps: jax.Array | float) -> jax.Array:
  r"""Var-DRO's inner maximization: the worst-case weights in a box around uniform.

  Solves exactly

  .. math::

    q^\star = \arg\max_q \sum_i q_i \ell_i \quad \text{s.t.} \quad \sum_i q_i = 1, \quad
    e^{-\epsilon_i}/B \le q_i \le e^{\epsilon_i}/B.

  Every :math:`q_i` starts at its lower bound; the remaining mass
  :math:`1 - \sum_i e^{-\epsilon_i}/B` is poured into the examples in decreasing order of loss,
  each up to its upper bound (KKT threshold structure):
  :math:`q_i = e^{-\epsilon_i}/B + \mathrm{clip}(R - C_i, 0, c_i)` with :math:`R` the
  remaining mass, :math:`c_i` the room of example ``i`` and :math:`C_i` the room of all larger
  losses (ties: see below). For
  ``B > 256`` it is one sort, one cumulative sum and a clip, :math:`O(B \log B)`; for
  ``B <= 256`` the same :math:`C_i` are summed from an :math:`O(B^2)` comparison, which is faster
  than a sort on CPU at those sizes. No Python loop over the batch; ``jit``- and
  ``vmap``-compatible (vmap over a leading axis solves independent problems).

  Ties: examples with exactly equal losses form a group that receives its share of the mass in
  proportion to each member's room :math:`(e^{\epsilon_i} - e^{-\epsilon_i})/B`, so the result
  is deterministic and permutation-equivariant (any split of a tie group has the same objective).

  Differentiation: the weights are treated as constants. Both the inputs and the output pass
  through ``jax.lax.stop_gradient``, so ``jax.grad`` of ``sum(q * losses)`` with respect to the
  model parameters is ``sum(q * dlosses)`` — the envelope-theorem gradient of the max, which is
  what Var-DRO trains with.

  Any radius in ``[0, inf]`` is exact and finite: the solver works with the log of the room
  above the lower bound and never forms ``e^eps`` (which overflows float32 above ~88.7), and
  ``eps = inf`` means no bounds (all mass on the largest loss, shared evenly by exact ties of
  infinite radius).

  Args:
    losses: ``[B]`` float per-example losses, finite (checked when concrete).
    eps: radius, a scalar or ``[B]`` float, every entry in ``[0, inf]`` (``eps = 0`` gives
      uniform weights ``1/B``). Values are checked when concrete (outside ``jit``); under
      ``jit`` a negative or NaN radius makes every weight NaN (never a finite wrong answer).

  Returns:
    ``[B]`` weights ``q`` in the dtype of ``result_type(losses, eps)``, summing to 1.

  Raises:
    TypeError: if ``losses`` or ``eps`` is not floating point.
    ValueError: on a wrong rank, a batch-size mismatch, an empty batch or a negative ``eps``.

  Example:
    >>> import jax.numpy as jnp
    >>> q = water_filling(jnp.array([0.1, 2.0, 0.5, 1.0]), jnp.log(2.0))
    >>> [round(float(v), 4) for v in q]
    [0.125, 0.5, 0.125, 0.25]
  """
  losses = _check_float_array("losses", losses, rank=1)
  if isinstance(eps, (int, float)) and not isinstance(eps, bool):
    eps = jnp.asarray(eps, dtype=losses.dtype)
  eps = _check_float_array("eps", eps)
  if eps.ndim not in (0, 1):
    raise ValueError(f"eps must be a scalar or have shape [B]={losses.shape}, got shape "
                     f"{eps.shape}.")
  if eps.ndim == 1 and eps.shape[0] != losses.shape[0]:
    raise ValueError(f"eps must be a scalar or have shape [B]={losses.shape} like losses, got "
                     f"shape {eps.shape}.")
  if losses.shape[0] == 0:
    raise ValueError("losses must hold at least one example, got shape (0,).")
  _check_finite("losses", losses)
  _check_nonnegative("eps", eps)
  q = _water_filling(jax.lax.stop_gradient(losses), jax.lax.stop_gradient(eps))
  return jax.lax.stop_gradient(q)


# ----------------------------------------------------------------------------------------------
# Online variance tracker.


class TrackerState(NamedTuple):
  """Per-example EMA of the loss mean and variance, indexed by dataset example id (a pytree).

  Attributes:
    mean: ``[N]`` float32 EMA of the loss.
    var: ``[N]`` float32 EMA of the loss variance.
    count: ``[N]`` int32 number of updates in which the example appeared (0: never seen).
  """

  mean: jax.Array  # [N] float32
  var: jax.Array  # [N] float32
  count: jax.Array  # [N] int32

  @property
  def seen(self) -> jax.Array:
    """``[N]`` bool, whether each example has been seen at least once."""
    return self.count > 0


def init_tracker(num_examples: int) -> TrackerState:
  """An empty tracker for a dataset of ``num_examples`` examples (ids ``0..N-1``).

  Args:
    num_examples: ``N``, a positive Python int (static: it fixes the shapes).

  Returns:
    A ``TrackerState`` of zeros (``count == 0``: nothing seen).

  Example:
    >>> s = init_tracker(3)
    >>> s.mean.shape, s.count.tolist()
    ((3,), [0, 0, 0])
  """
  n = check_static_int("num_examples", num_examples, minimum=1)
  return TrackerState(mean=jnp.zeros((n,), jnp.float32), var=jnp.zeros((n,), jnp.float32),
                      count=jnp.zeros((n,), jnp.int32))


def _tracker_ids(name: str, tracker: Any, ids: Any) -> jax.Array:
  """``ids`` as ``[B]`` int rows of ``tracker`` (argument ``name``), range checked if concrete."""
  if not isinstance(tracker, TrackerState):
    raise TypeError(f"{name} must be a TrackerState (from init_tracker), got "
                    f"{type(tracker).__name__}.")
  ids = jnp.asarray(ids)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(f"ids must be an integer array, got dtype {ids.dtype}.")
  if ids.ndim != 1:
    raise ValueError(f"ids must have rank 1 ([B]), got shape {ids.shape}.")
  check_int_range("ids", ids, 0, tracker.mean.shape[0], fix="(the tracker's num_examples)")
  return ids


def tracked_rows(tracker: TrackerState, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The batch's tracked loss means and variances. An id outside ``[0, N)`` raises when concrete
  and reads NaN when traced, never (as a plain gather would clamp or wrap it) another row.

  Args:
    tracker: the tracker.
    ids: ``[B]`` integer example ids in ``[0, N)``.

  Returns:
    ``(mean [B], var [B])`` float32.

  Example:
    >>> s = update_tracker(init_tracker(3), jnp.array([1, 2]), jnp.array([2.0, 5.0]))
    >>> [a.tolist() for a in tracked_rows(s, jnp.array([2, 1]))]
    [[5.0, 2.0], [0.0, 0.0]]
  """
  ids = _tracker_ids("tracker", tracker, ids)
  mean, var = (jnp.asarray(table).at[ids].get(mode="fill", fill_value=jnp.nan,
                                              wrap_negative_indices=False)
               for table in (tracker.mean, tracker.var))
  return mean, var


@renamed(alpha="ema")
def update_tracker(state: TrackerState, ids: jax.Array, losses: jax.Array, *,
                   ema: float = 0.1) -> TrackerState:
  r"""One EMA update of the per-example loss mean and variance.

  For each example id seen in the batch, with loss :math:`\ell` and
  :math:`\delta = \ell - m`:

  .. math::

    m \leftarrow m + \beta\,\delta, \qquad v \leftarrow (1 - \beta)\,(v + \beta\,\delta^2),

  the exponentially weighted mean and variance (the variance of the EMA-weighted history; with
  :math:`\beta = 1` it is 0). A first sighting (``count == 0``) initializes ``m = loss``,
  ``v = 0`` instead of mixing with the zero initial state. Ids not in the batch are unchanged.

  Duplicate ids in one batch (deterministic rule): the duplicates' losses are averaged and the
  example gets ONE update with that average (its ``count`` grows by 1, not by the number of
  copies). The result does not depend on the order of the duplicates.

  Args:
    state: the tracker.
    ids: ``[B]`` integer example ids in ``[0, N)``; out-of-range ids are dropped by JAX's scatter
      semantics (checked when concrete).
    losses: ``[B]`` float losses (treated as constants: ``stop_gradient``), finite (checked
      when concrete).
    ema: EMA rate in ``(0, 1]`` (Var-DRO uses 0.1).

  Returns:
    The updated ``TrackerState``.

  Example:
    >>> s = update_tracker(init_tracker(2), jnp.array([1]), jnp.array([2.0]))
    >>> s = update_tracker(s, jnp.array([1]), jnp.array([4.0]), ema=0.5)
    >>> float(s.mean[1]), float(s.var[1]), s.count.tolist()
    (3.0, 1.0, [0, 2])
  """
  ids = _tracker_ids("state", state, ids)
  losses = _check_float_array("losses", losses, rank=1)
  _check_finite("losses", losses)  # a NaN would stay in the tracker for good
  if losses.shape != ids.shape:
    raise ValueError(f"losses must have the shape of ids {ids.shape}, got {losses.shape}.")
  if _is_concrete(ema) and not 0.0 < float(ema) <= 1.0:
    raise ValueError(f"ema must be in (0, 1], got {ema}.")
  n = state.mean.shape[0]
  losses = jax.lax.stop_gradient(losses).astype(state.mean.dtype)

  # Average duplicates: per-id sum and count over the batch, then read back per slot.
  sums = jnp.zeros((n,), losses.dtype).at[ids].add(losses)
  hits = jnp.zeros((n,), jnp.int32).at[ids].add(1)
  batch_loss = sums[ids] / hits[ids].astype(losses.dtype)  # [B], equal for duplicates

  old_mean, old_var, old_count = state.mean[ids], state.var[ids], state.count[ids]
  delta = batch_loss - old_mean
  first = old_count == 0
  new_mean = jnp.where(first, batch_loss, old_mean + ema * delta)
  new_var = jnp.where(first, 0.0, (1.0 - ema) * (old_var + ema * delta * delta))
  # Duplicates write identical values, so the scatter order does not matter.
  return TrackerState(mean=state.mean.at[ids].set(new_mean),
                      var=state.var.at[ids].set(new_var.astype(state.var.dtype)),
                      count=state.count.at[ids].set(old_count + 1))


# ----------------------------------------------------------------------------------------------
# Radii and schedule.


def radii(variances: jax.Array, *, eps_min: float | jax.Array,
          eps_max: float | jax.Array) -> jax.Array:
  r"""Var-DRO's per-example radii from the batch's tracked variances.

  .. math::

    \epsilon_i = \epsilon_{\min} + (\epsilon_{\max} - \epsilon_{\min})\,
      \frac{\sigma_i^2}{\max_j \sigma_j^2},

  with :math:`\epsilon_i = \epsilon_{\min}` for all ``i`` when every variance is 0.

  Args:
    variances: ``[B]`` float, non-negative (e.g. ``update_tracker(...).var[ids]``); a negative
      or NaN variance is a ``ValueError`` when concrete, NaN radii under ``jit``.
    eps_min: smallest radius, ``>= 0``.
    eps_max: largest radius, ``>= eps_min`` (checked when concrete; ``inf`` allowed: no upper
      bound for the largest variances); may be a traced scalar
      (the output of ``eps_max_schedule``).

  Returns:
    ``[B]`` radii in ``[eps_min, eps_max]``.

  Example:
    >>> radii(jnp.array([0.0, 1.0, 4.0]), eps_min=0.5, eps_max=1.0).tolist()
    [0.5, 0.625, 1.0]
  """
  variances = _check_float_array("variances", variances, rank=1)
  _check_nonnegative("variances", variances)
  _check_nonnegative("eps_min", eps_min)
  _check_nonnegative("eps_max", eps_max)
  if _is_concrete(eps_min) and _is_concrete(eps_max):
    if np.any(np.asarray(eps_max) < np.asarray(eps_min)):
      raise ValueError(f"eps_max must be >= eps_min, got eps_max={eps_max}, eps_min={eps_min}.")
  variances = jax.lax.stop_gradient(variances)
  top = jnp.max(variances)
  ratio = jnp.where(top > 0, variances / jnp.where(top > 0, top, 1.0), 0.0)
  eps_min = jnp.asarray(eps_min, variances.dtype)
  eps_max = jnp.asarray(eps_max, variances.dtype)
  # The endpoints are taken as they are, and an empty span is 0, so that an infinite eps_max
  # (or eps_min) gives inf, never inf * 0 or inf - inf = NaN.
  span = jnp.where(eps_max == eps_min, 0.0, eps_max - eps_min)
  lerp = eps_min + span * ratio
  out = jnp.where(ratio <= 0, eps_min, jnp.where(ratio >= 1, eps_max, lerp))
  # Traced variances are unchecked: a negative or NaN one makes every radius NaN (and so every
  # weight), never a finite radius computed from a wrong maximum.
  return jnp.where(jnp.all(variances >= 0), out, jnp.nan)


def eps_max_schedule(step: jax.Array | int, *, warmup_steps: int, ramp_steps: int,
                     eps_max: float) -> jax.Array:
  r"""The largest radius over training: 0 during warm-up, then a linear ramp to ``eps_max``.

  .. math::

    \epsilon_{\max}(t) = \epsilon_{\max}\,\mathrm{clip}\!\left(
      \frac{t - T_{\mathrm{warm}}}{T_{\mathrm{ramp}}}, 0, 1\right),

  so it is 0 for ``t <= warmup_steps`` and reaches ``eps_max`` at
  ``t = warmup_steps + ramp_steps``. With ``ramp_steps = 0`` it jumps to ``eps_max`` at
  ``t = warmup_steps``.

  Args:
    step: the optimizer step, an int or a traced ``[]`` integer array.
    warmup_steps: ``>= 0`` Python int.
    ramp_steps: ``>= 0`` Python int.
    eps_max: final radius, ``>= 0`` (``inf`` allowed: 0 in warm-up, inf after it).

  Returns:
    ``[]`` float32.

  Example:
    >>> [float(eps_max_schedule(t, warmup_steps=2, ramp_steps=4, eps_max=1.0)) for t in (0, 4, 9)]
    [0.0, 0.5, 1.0]
  """
  for name, v in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
    if _is_concrete(v) and int(v) < 0:
      raise ValueError(f"{name} must be >= 0, got {v}.")
  _check_nonnegative("eps_max", eps_max)
  t = jnp.asarray(step, jnp.float32) - jnp.asarray(warmup_steps, jnp.float32)
  eps_max = jnp.asarray(eps_max, jnp.float32)
  if isinstance(ramp_steps, (int, np.integer)) and ramp_steps == 0:
    return jnp.where(t >= 0, eps_max, 0.0)
  frac = jnp.clip(t / jnp.asarray(ramp_steps, jnp.float32), 0.0, 1.0)
  return jnp.where(frac > 0, eps_max * frac, 0.0)  # eps_max = inf: 0 in warm-up, not NaN


def loss_scaled_eps_max(tracked_losses: jax.Array, *, eps_max: float,
                        num_classes: int) -> jax.Array:
  r"""Var-DRO's ``schedule='loss'`` cap: :math:`\epsilon_{\max}\,\mathrm{clip}(1 - \bar m /
  \log K, 0, 1)`, with :math:`\bar m` the batch's mean tracked loss and :math:`\log K` the loss
  of a uniform prediction (no radius while the model predicts nothing).

  Args:
    tracked_losses: ``[B]`` float, each example's tracked (EMA) mean loss (Var-DRO reads it
      after this step's ``update_tracker``, so every example of the batch has one).
    eps_max: the cap, ``>= 0`` and finite.
    num_classes: ``K >= 2``, a Python int.

  Returns:
    ``[]`` the scaled cap, in the dtype of ``tracked_losses``.

  Example:
    >>> float(loss_scaled_eps_max(jnp.array([0.0, 0.5 * np.log(4)]), eps_max=2.0,
    ...                           num_classes=4))
    1.5
  """
  tracked_losses = _check_float_array("tracked_losses", tracked_losses, rank=1)
  check_static_int("num_classes", num_classes, minimum=2)
  _check_nonnegative("eps_max", eps_max)
  _check_finite("eps_max", eps_max)
  return eps_max * jnp.clip(1.0 - jnp.mean(tracked_losses) / math.log(num_classes), 0.0, 1.0)


def var_dro_weights(losses: jax.Array, variances: jax.Array, step: jax.Array | int, *,
                    eps_min: float, eps_max: float, warmup_steps: int,
                    ramp_steps: int) -> jax.Array:
  """Var-DRO weights for one batch: schedule -> radii -> water-filling.

  ``eps_max(t) = eps_max_schedule(step, ...)``; the radii use ``min(eps_min, eps_max(t))`` as
  their floor, so during warm-up (``eps_max(t) = 0``) every radius is 0 and the weights are
  uniform (plain ERM), as in the paper; after the ramp the floor is ``eps_min``.

  Args:
    losses: ``[B]`` float per-example losses.
    variances: ``[B]`` float tracked variances of the same examples, updated with this batch
      first (``update_tracker(state, ids, losses).var[ids]``, the paper's order).
    step: optimizer step (int or traced ``[]`` integer).
    eps_min, eps_max: radius floor and final cap (``0 <= eps_min <= eps_max``).
    warmup_steps, ramp_steps: the schedule (Python ints).

  Returns:
    ``[B]`` weights (constants for differentiation), summing to 1.

  Example:
    >>> q = var_dro_weights(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), 0, eps_min=0.0,
    ...                     eps_max=1.0, warmup_steps=5, ramp_steps=5)
    >>> q.tolist()
    [0.5, 0.5]
  """
  losses = _check_float_array("losses", losses, rank=1)
  variances = _check_float_array("variances", variances, rank=1)
  if variances.shape != losses.shape:
    raise ValueError(f"variances must have the shape of losses {losses.shape}, got "
                     f"{variances.shape}.")
  _check_nonnegative("variances", variances)
  if _is_concrete(eps_min) and _is_concrete(eps_max) and np.any(
      np.asarray(eps_max) < np.asarray(eps_min)):
    raise ValueError(f"eps_max must be >= eps_min, got eps_max={eps_max}, eps_min={eps_min}.")
  cap = eps_max_schedule(step, warmup_steps=warmup_steps, ramp_steps=ramp_steps,
                         eps_max=eps_max)
  _check_nonnegative("eps_min", eps_min)
  floor = jnp.minimum(jnp.asarray(eps_min, jnp.float32), cap)
  eps = radii(variances.astype(jnp.float32), eps_min=floor, eps_max=cap)
  return water_filling(losses, eps.astype(losses.dtype))



# Group DRO's weight update lives in drojax.groups; this is its name in this module.
from drojax.groups import group_adjustments, group_dro_update  # noqa: E402

__all__ += ["group_adjustments", "group_dro_update"]
