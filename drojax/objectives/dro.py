r"""The distributionally robust objectives: W-DRO (DRO-Augment), Var-DRO, KL-DRO, CVaR.

Each constructor takes its hyper-parameters as keyword options, checks them, and returns an
:class:`~drojax.objectives.base.Objective`. ``wdro``, ``kl_dro`` and ``cvar`` have no state;
``var_dro``'s state is its per-example variance tracker (:class:`drojax.weighting.TrackerState`),
updated inside its own ``apply`` before the weights are solved. ``kl_dro_risk`` and
``cvar_risk`` are the scalar reductions of a ``[B]`` vector of losses they use. Imports JAX only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from drojax import wdro as _wdro
from drojax import weighting as _weighting
from drojax._checks import check_float as _check_float
from drojax._checks import check_finite, check_hyper, check_static_int
from drojax._wdro_modes import check_q_norm
from drojax.objectives.base import (Objective, ObjectiveAux, all_gather, stateless_init,
                                    weight_entropy)

__all__ = ["cvar", "cvar_risk", "kl_dro", "kl_dro_risk", "tracked_weights", "var_dro", "wdro"]


def kl_dro_risk(losses: jax.Array, *, temperature: float | jax.Array) -> jax.Array:
  r"""KL-DRO objective (the dual of a KL-ball worst case at a fixed temperature).

  .. math::

    \tau \log \frac1B \sum_i e^{\ell_i / \tau}
    = \tau\,(\mathrm{logsumexp}(\ell / \tau) - \log B),

  computed stably with ``logsumexp``. Its gradient weights example ``i`` by
  :math:`\mathrm{softmax}(\ell/\tau)_i`. Large :math:`\tau` tends to the mean, small
  :math:`\tau` to the max.

  Args:
    losses: ``[B]`` float per-example losses.
    temperature: :math:`\tau > 0`.

  Returns:
    ``[]`` scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> round(float(kl_dro_risk(jnp.array([1.0, 1.0]), temperature=0.5)), 6)
    1.0
  """
  losses = _check_float("losses", losses, rank=1)
  check_finite("losses", losses)
  check_hyper("temperature", temperature, low=0.0, low_open=True, expected="> 0 and finite")
  t = jnp.asarray(temperature, losses.dtype)
  b = losses.shape[0]
  return t * (jax.nn.logsumexp(losses / t) - jnp.log(jnp.asarray(b, losses.dtype)))


def cvar_risk(losses: jax.Array, *, alpha: float) -> jax.Array:
  r"""Conditional value at risk: the mean of the largest ``k`` losses, ``k = ceil(alpha * B)``.

  Convention: ``k = max(1, ceil(alpha * B))`` with ``alpha * B`` first rounded to 6 decimals
  (so ``alpha = 0.3, B = 10`` gives ``k = 3``, not 4 from floating-point ``3.0000000000000004``).
  This is the empirical top-fraction average; it differs from the Rockafellar-Uryasev CVaR,
  which weights the boundary example fractionally, when ``alpha * B`` is not an integer.
  ``alpha = 1`` gives the mean. The gradient flows to the selected examples only (ties broken
  by ``lax.top_k``'s order).

  Args:
    losses: ``[B]`` float per-example losses, finite (checked when concrete; a traced NaN
      gives NaN).
    alpha: fraction in ``(0, 1]`` (static Python float: it fixes ``k``).

  Returns:
    ``[]`` scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> float(cvar_risk(jnp.array([1.0, 4.0, 2.0, 3.0]), alpha=0.5))
    3.5
  """
  losses = _check_float("losses", losses, rank=1)
  check_finite("losses", losses)
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
    raise TypeError(f"alpha must be a Python float (static), got {type(alpha).__name__}.")
  if not 0.0 < float(alpha) <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha}.")
  b = losses.shape[0]
  k = max(1, math.ceil(round(float(alpha) * b, 6)))
  top, _ = jax.lax.top_k(losses, k)
  # top_k may rank a traced NaN below every number and drop it: NaN in, NaN out.
  return jnp.where(jnp.any(jnp.isnan(losses)), jnp.nan, jnp.mean(top))


def wdro(*, rho: float, q: float = _wdro.DEFAULT_Q, norm: str = "l2",
         penalty_mode: str = "forward_over_reverse", penalty_subsample: float = 1.0) -> Objective:
  r"""DRO-Augment: mean loss + ``rho`` x variation penalty of the input gradients. No state.

  The penalty is taken on the views actually trained on (``images [B, V, H, W, C]``, one dual
  norm per example over all its views), through ``model.loss`` (the augmented targets and the
  mixing plan included), over the global batch (``ctx.axis_name``); see
  :func:`drojax.wdro.wdro_total` for ``q``, ``norm``, ``penalty_mode`` (``forward_over_reverse``
  by default; ``exact`` gives the same gradient by a gradient of a gradient) and
  ``penalty_subsample`` (< 1: a random fraction of the batch, drawn with ``key``). BatchNorm in
  train mode couples examples, so the input gradient is that of the batch's summed loss (as in
  the reference).
  """
  check_hyper("rho", rho, low=0.0, expected=">= 0 and finite")
  check_q_norm(q, norm)
  if penalty_mode not in _wdro.PENALTY_MODES:
    raise ValueError(f"penalty_mode must be one of {_wdro.PENALTY_MODES}, got {penalty_mode!r}")
  check_hyper("penalty_subsample", penalty_subsample, low=0.0, low_open=True, high=1.0,
              expected="a number in (0, 1]")

  def apply(key, state, model, images, targets, ctx):
    total, aux = _wdro.wdro_total(
        key if penalty_subsample < 1.0 else None, model.loss, images, targets, rho=rho, q=q,
        norm=norm, has_aux=True, axis_name=ctx.axis_name, penalty_mode=penalty_mode,
        penalty_subsample=penalty_subsample)
    return total, ObjectiveAux(aux.losses, aux.fn_aux, {"penalty": aux.penalty}), state

  return Objective(stateless_init, apply)


VAR_DRO_SCHEDULES = ("ramp", "loss")


def tracked_weights(tracker: _weighting.TrackerState, ids: jax.Array, losses: jax.Array,
                    step: jax.Array | int, *, eps_min: float, eps_max: float,
                    warmup_steps: int, ramp_steps: int, schedule: str = "ramp",
                    num_classes: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Var-DRO's weights of one batch from its variance tracker, as :func:`var_dro` solves them.

  :func:`~drojax.weighting.var_dro_weights` on the batch's tracked variances
  (:func:`~drojax.weighting.tracked_rows`); with ``schedule="loss"`` its cap is first scaled by
  the batch's tracked mean losses (:func:`~drojax.weighting.loss_scaled_eps_max`).

  Args:
    tracker: the tracker, already updated with this batch (the paper's order).
    ids: ``[B]`` integer example ids of the batch.
    losses: ``[B]`` float per-example losses.
    step: optimizer step (int or traced ``[]`` integer).
    eps_min, eps_max, warmup_steps, ramp_steps, schedule: as in :func:`var_dro`.
    num_classes: ``K`` (read by ``schedule="loss"`` only).

  Returns:
    ``(weights [B] summing to 1, cap [])``, the cap the radii schedule ramps to (``eps_max``
    for ``"ramp"``).
  """
  if schedule not in VAR_DRO_SCHEDULES:
    raise ValueError(f"schedule must be one of {VAR_DRO_SCHEDULES}, got {schedule!r}")
  mean, var = _weighting.tracked_rows(tracker, ids)
  cap = eps_max
  if schedule == "loss":
    cap = _weighting.loss_scaled_eps_max(mean, eps_max=eps_max,
                                         num_classes=num_classes)
  weights = _weighting.var_dro_weights(losses, var, step, eps_min=eps_min,
                                       eps_max=cap, warmup_steps=warmup_steps,
                                       ramp_steps=ramp_steps)
  return weights, cap


def var_dro(*, eps_min: float = 0.0, eps_max: float = 1.0, warmup_steps: int = 0,
            ramp_steps: int = 0, ema: float = 0.1, schedule: str = "ramp") -> Objective:
  r"""Var-DRO (arXiv 2511.05568): :math:`\sum_i q_i \ell_i` with water-filling weights.

  State: the variance tracker (``init(num_examples)``, one slot per training example id).
  Each step follows the paper's order (its critical path): the losses and ids are gathered over
  ``ctx.axis_name`` into the GLOBAL batch, the tracker is updated with them first (EMA rate
  ``ema``; duplicates of an id are averaged into one update, see
  :func:`~drojax.weighting.update_tracker`), and the weights are then solved from the UPDATED
  variances ``new_state.var[ids]`` (a duplicated id reads its one updated value), with radii
  following ``eps_max_schedule(ctx.step)``. A first sighting sets the variance to 0, so an
  example's weight departs from uniform from its second visit on. Weights are constants for
  differentiation. The value is the same on every device.

  ``schedule="loss"`` (data-driven, beside the paper's ramp): the cap is also scaled by
  :math:`\mathrm{clip}(1 - \bar m / \log K, 0, 1)`, with :math:`\bar m` the global batch's mean
  tracked loss (the updated EMA mean, which every example of the batch has) and :math:`\log K`
  the loss of a uniform prediction: no radius while the model predicts nothing, and a cap that
  stays small where the loss cannot fall (label noise), so noisy examples' variance is not
  amplified.
  """
  if schedule not in VAR_DRO_SCHEDULES:
    raise ValueError(f"schedule must be one of {VAR_DRO_SCHEDULES}, got {schedule!r}")
  if schedule == "loss" and not math.isfinite(eps_max):
    raise ValueError(f"schedule='loss' scales eps_max: it must be finite, got {eps_max}")
  check_hyper("eps_min", eps_min, low=0.0, expected=">= 0 and finite")
  check_hyper("eps_max", eps_max, low=0.0, expected="a number >= 0 (inf allowed)",
              allow_inf=True)
  for name, value in (("warmup_steps", warmup_steps), ("ramp_steps", ramp_steps)):
    check_static_int(name, value, minimum=0)
  check_hyper("ema", ema, low=0.0, low_open=True, high=1.0, expected="a number in (0, 1]")
  if eps_max < eps_min:
    raise ValueError(f"eps_max ({eps_max}) must be >= eps_min ({eps_min})")

  def init(num_examples):
    if num_examples is None:
      raise ValueError("var_dro tracks per-example loss variance: pass num_examples (the "
                       "training set size) when creating the train state")
    return _weighting.init_tracker(int(num_examples))

  def apply(key, state, model, images, targets, ctx):
    del key
    if not isinstance(state, _weighting.TrackerState):
      raise ValueError("var_dro needs its variance tracker as state: create the train state "
                       "with the method and num_examples (the dataset size)")
    losses, model_aux = model.loss(images, targets)
    all_losses = jax.lax.stop_gradient(all_gather(losses, ctx.axis_name))
    all_ids = all_gather(ctx.ids, ctx.axis_name)
    new_state = _weighting.update_tracker(state, all_ids, all_losses, ema=ema)
    weights, cap = tracked_weights(new_state, all_ids, all_losses, ctx.step, eps_min=eps_min,
                                   eps_max=eps_max, warmup_steps=warmup_steps,
                                   ramp_steps=ramp_steps, schedule=schedule,
                                   num_classes=targets.shape[-1])
    weights = jax.lax.stop_gradient(weights)
    value = jnp.sum(weights * all_gather(losses, ctx.axis_name))
    n = weights.shape[0]
    metrics = {"weights_max_ratio": jnp.max(weights) * n,
               "weights_entropy": weight_entropy(weights),
               "weights_sum": jnp.sum(weights)}
    if schedule == "loss":
      metrics["eps_max"] = cap
    return value, ObjectiveAux(losses, model_aux, metrics), new_state

  return Objective(init, apply)


def kl_dro(*, temperature: float) -> Objective:
  r"""KL-DRO: :math:`\tau \log \frac1N \sum_i e^{\ell_i/\tau}` over the global batch. No state."""
  check_hyper("temperature", temperature, low=0.0, low_open=True,
              expected="> 0 and finite")

  def apply(key, state, model, images, targets, ctx):
    del key
    losses, model_aux = model.loss(images, targets)
    all_losses = all_gather(losses, ctx.axis_name)
    value = kl_dro_risk(all_losses, temperature=temperature)
    w = jax.nn.softmax(jax.lax.stop_gradient(all_losses) / temperature)
    metrics = {"weights_max_ratio": jnp.max(w) * w.shape[0], "weights_entropy": weight_entropy(w)}
    return value, ObjectiveAux(losses, model_aux, metrics), state

  return Objective(stateless_init, apply)


def cvar(*, alpha: float) -> Objective:
  """CVaR: the mean of the top ``ceil(alpha * N)`` losses of the global batch. No state."""
  check_hyper("alpha", alpha, low=0.0, low_open=True, high=1.0, expected="a number in (0, 1]")

  def apply(key, state, model, images, targets, ctx):
    del key
    losses, model_aux = model.loss(images, targets)
    value = cvar_risk(all_gather(losses, ctx.axis_name), alpha=alpha)
    return value, ObjectiveAux(losses, model_aux, {}), state

  return Objective(stateless_init, apply)
