r"""Group-shift objectives: group DRO, V-REx, IRMv1, Var-DRO + V-REx, and JTT's weighted stage.

* :func:`group_dro` (Sagawa et al., ICLR 2020): state = the group weights ``q [G]``, one
  exponentiated-gradient step per batch (:func:`drojax.groups.group_dro_update`), value
  :math:`\sum_g q_g \bar\ell_g`; needs group ids (``ctx.groups``).
* :func:`vrex` (Krueger et al., ICML 2021): mean environment risk + :math:`\lambda` x the
  variance of the environment risks; needs environment ids (``ctx.environments``).
* :func:`irm` (Arjovsky et al. 2019): mean environment risk + :math:`\lambda` x the mean over
  environments of IRMv1's squared dummy-classifier gradient.
* :func:`var_dro_vrex`: Var-DRO's water-filling weights over examples plus the V-REx penalty
  over environments (the Var-DRO paper's open question 2).
* :func:`weighted_erm`: :math:`\sum_i w_{id_i} \ell_i / \sum_i w_{id_i}` with fixed per-example
  weights in its state (JTT's second stage: errors of the identification model upweighted).

The penalty schedule follows both papers' Colored MNIST code
(:func:`drojax.groups.annealed_penalty`): weight 1 before ``anneal_steps``, :math:`\lambda` from
then on, and the objective divided by :math:`\lambda` when :math:`\lambda > 1`.

Group and environment statistics are taken over the GLOBAL batch (sums and counts summed over
``ctx.axis_name``), so every device returns the same scalar and N devices match one device.
A group or environment absent from a batch does not count (its risk is left out of the mean
and the variance; group DRO gives it loss 0, as Sagawa et al.'s code does). Imports JAX only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from drojax import groups as _groups
from drojax._checks import check_hyper, check_static_int
from drojax.losses import cross_entropy
from drojax.objectives.base import Objective, ObjectiveAux, stateless_init
from drojax.objectives.dro import var_dro

__all__ = ["GroupDROState", "group_dro", "irm", "var_dro_vrex", "vrex", "weighted_erm"]


class GroupDROState(NamedTuple):
  q: jax.Array  # [G] float32 group weights, positive, summing to 1


def _ids(ctx, field: str, method: str) -> jax.Array:
  ids = getattr(ctx, field)
  if ids is None:
    kind = field[:-1]
    raise ValueError(f"{method} needs {kind} labels, but the batches carry no {kind!r} ids: "
                     f"train on a dataset with {field} (e.g. colored_digits, dominoes, "
                     f"waterbirds)")
  return ids


def _env_risks(losses, envs, num_environments, axis_name):
  """(mean risk over the environments present, their risks [E], present [E] bool)."""
  risks = _groups.group_losses(losses, envs, num_environments, axis_name=axis_name)
  present = _groups.group_counts(envs, num_environments, axis_name=axis_name) > 0
  mean = jnp.sum(jnp.where(present, risks, 0.0)) / jnp.maximum(jnp.sum(present), 1)
  return mean, risks, present


def _check_penalty(name: str, num_environments: int, penalty_weight: float,
                   anneal_steps: int) -> None:
  check_static_int("num_environments", num_environments, minimum=0)
  if num_environments == 1:
    raise ValueError(f"{name} compares environments: it needs at least 2, got "
                     f"num_environments=1")
  check_hyper(f"{name}_penalty_weight", penalty_weight, low=0.0, expected=">= 0 and finite")
  check_static_int("penalty_anneal_steps", anneal_steps, minimum=0)


def _require_count(name: str, field: str, count: int) -> None:
  """A count of 0 means "from the data": it must have been filled in before training."""
  if count == 0:
    raise ValueError(f"{name}: {field} is 0 (from the data) but was never filled in: pass the "
                     f"number of {field[4:]} of the training data")


def _counted_init(name: str, field: str, count: int, init=stateless_init):
  def checked(num_examples):
    _require_count(name, field, count)
    return init(num_examples)

  return checked


def group_dro(*, num_groups: int, step_size: float,
              adjustments: np.ndarray | None = None) -> Objective:
  r"""Group DRO (Sagawa et al. 2020, Algorithm 1). State: :class:`GroupDROState`.

  Per step: group losses :math:`\bar\ell` of the global batch, then
  ``q <- group_dro_update(q, stop_gradient(l), step_size, adjustments)`` and the value
  :math:`\sum_g q_g \bar\ell_g` (the new weights are constants for differentiation).

  Args:
    num_groups: ``G`` (static).
    step_size: :math:`\eta > 0`.
    adjustments: optional ``[G]`` :math:`C/\sqrt{n_g}` (:func:`drojax.groups.group_adjustments`).
  """
  g = check_static_int("num_groups", num_groups, minimum=0)
  check_hyper("group_dro_step_size", step_size, low=0.0, low_open=True,
              expected="> 0 and finite")
  adj = None
  if adjustments is not None:
    adj = np.asarray(adjustments, np.float64)
    if adj.shape != (g,):
      raise ValueError(f"adjustments must have shape [num_groups]=({g},), got {adj.shape}")

  def init(num_examples):
    del num_examples
    _require_count("group_dro", "num_groups", g)
    return GroupDROState(q=jnp.full((g,), 1.0 / g, jnp.float32))

  def apply(key, state, model, images, targets, ctx):
    del key
    groups = _ids(ctx, "groups", "group_dro")
    losses, model_aux = model.loss(images, targets)
    gl = _groups.group_losses(losses, groups, g, axis_name=ctx.axis_name)
    q = _groups.group_dro_update(state.q, jax.lax.stop_gradient(gl), step_size=step_size,
                                 adjustments=None if adj is None else jnp.asarray(adj, gl.dtype))
    value = jnp.sum(q * gl)
    metrics = {"worst_group_loss": jnp.max(jax.lax.stop_gradient(gl)),
               "group_weight_max": jnp.max(q)}
    return value, ObjectiveAux(losses, model_aux, metrics), GroupDROState(q=q)

  return Objective(init, apply)


def vrex(*, num_environments: int, penalty_weight: float, anneal_steps: int = 0) -> Objective:
  r"""V-REx: mean environment risk + :math:`\lambda` x their population variance. No state."""
  _check_penalty("vrex", num_environments, penalty_weight, anneal_steps)

  def apply(key, state, model, images, targets, ctx):
    del key
    envs = _ids(ctx, "environments", "vrex")
    losses, model_aux = model.loss(images, targets)
    risk, risks, present = _env_risks(losses, envs, num_environments, ctx.axis_name)
    penalty = _groups.vrex_penalty(risks, mask=present)
    value = _groups.annealed_penalty(risk, penalty, ctx.step, weight=penalty_weight,
                                     anneal_steps=anneal_steps)
    return value, ObjectiveAux(losses, model_aux, {"penalty": penalty, "risk": risk}), state

  return Objective(_counted_init("vrex", "num_environments", num_environments), apply)


def irm(*, num_environments: int, penalty_weight: float, anneal_steps: int = 0) -> Objective:
  r"""IRMv1: mean environment risk + :math:`\lambda` x the mean over the environments present
  of :math:`(\partial_w R_e(w \cdot f)|_{w=1})^2`. Cross-entropy on one view; no state."""
  _check_penalty("irm", num_environments, penalty_weight, anneal_steps)

  def apply(key, state, model, images, targets, ctx):
    del key
    envs = _ids(ctx, "environments", "irm")
    if images.shape[1] != 1:
      raise ValueError(f"irm trains on one view per example, got {images.shape[1]} (use the "
                       "plain augmentation)")
    logits, model_aux = model.logits(images)
    losses = cross_entropy(logits, targets)
    risk, _, present = _env_risks(losses, envs, num_environments, ctx.axis_name)
    grads = _groups.group_losses(_groups.irm_gradients(logits, targets), envs,
                                 num_environments, axis_name=ctx.axis_name)
    penalty = jnp.sum(jnp.where(present, jnp.square(grads), 0.0)) / jnp.maximum(
        jnp.sum(present), 1)
    value = _groups.annealed_penalty(risk, penalty, ctx.step, weight=penalty_weight,
                                     anneal_steps=anneal_steps)
    return value, ObjectiveAux(losses, model_aux, {"penalty": penalty, "risk": risk}), state

  return Objective(_counted_init("irm", "num_environments", num_environments), apply)


def var_dro_vrex(*, num_environments: int, penalty_weight: float, anneal_steps: int = 0,
                 **var_dro_options) -> Objective:
  r"""Var-DRO's weighted risk :math:`\sum_i q_i \ell_i` + :math:`\lambda` x V-REx's penalty.

  State: Var-DRO's variance tracker, updated before the weights as in :func:`var_dro`.
  ``var_dro_options`` are :func:`var_dro`'s (eps_min, eps_max, warmup_steps, ramp_steps, ema,
  schedule).
  """
  _check_penalty("vrex", num_environments, penalty_weight, anneal_steps)
  base = var_dro(**var_dro_options)

  def apply(key, state, model, images, targets, ctx):
    envs = _ids(ctx, "environments", "var_dro_vrex")
    value, aux, new_state = base.apply(key, state, model, images, targets, ctx)
    _, risks, present = _env_risks(aux.losses, envs, num_environments, ctx.axis_name)
    penalty = _groups.vrex_penalty(risks, mask=present)
    total = _groups.annealed_penalty(value, penalty, ctx.step, weight=penalty_weight,
                                     anneal_steps=anneal_steps)
    return total, aux._replace(metrics={**aux.metrics, "penalty": penalty}), new_state

  return Objective(_counted_init("var_dro_vrex", "num_environments", num_environments,
                                 base.init), apply)


def weighted_erm(weights_by_id: np.ndarray) -> Objective:
  r"""The weighted mean :math:`\sum_i w_{id_i}\ell_i / \sum_i w_{id_i}` over the global batch.

  JTT's second stage (Liu et al. 2021) with ``w = lambda_up`` on the identification model's
  training errors and 1 elsewhere (upweighting, the expectation of their upsampling). The
  weights are the state (``[N]`` float32, indexed by example id), so they are checkpointed with
  the run.

  Args:
    weights_by_id: ``[N]`` positive weights, ``N`` > every training example id.
  """
  w = np.asarray(weights_by_id, np.float32)
  if w.ndim != 1 or not w.size or not np.all(np.isfinite(w)) or np.any(w <= 0):
    raise ValueError(f"weights_by_id must be [N] positive finite weights, got shape {w.shape}")

  def init(num_examples):
    if num_examples is not None and num_examples > w.shape[0]:
      raise ValueError(f"weights_by_id has {w.shape[0]} entries, but example ids run up to "
                       f"{num_examples - 1}")
    return jnp.asarray(w)

  def apply(key, state, model, images, targets, ctx):
    del key
    losses, model_aux = model.loss(images, targets)
    weights = state[ctx.ids]
    num, den = jnp.sum(weights * losses), jnp.sum(weights)
    if ctx.axis_name is not None:
      num, den = jax.lax.psum((num, den), ctx.axis_name)
    return num / den, ObjectiveAux(losses, model_aux, {}), state

  return Objective(init, apply)
