"""Hidden-layer mixing plans: (manifold) mixup plus sparse noise, applied inside a model.

A ``MixPlan`` is drawn outside the model (by NoisyMix or manifold mixup, with an explicit key)
and passed to ``model.apply(..., mix=plan)``. The model calls ``apply_mix_plan`` at each
candidate position (0 = the input, k = after stage k); only the position named by
``plan.layer`` changes the activations. Activations are NHWC (or any ``[B, ...]``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

NO_MIXING = -1


class MixPlan(NamedTuple):
  """Where and how to mix a batch's activations.

  Attributes:
    layer: ``[]`` int32. 0 mixes the input, k mixes after stage k; ``NO_MIXING`` (-1) disables.
    partner: ``[B]`` int32. Example ``i`` is mixed with example ``partner[i]``.
    lam: ``[B]`` float32. Weight of example ``i`` itself: ``lam * h_i + (1 - lam) * h_partner``.
    add_scale: ``[B]`` float32. Standard deviation of the additive Gaussian noise (0: none).
    mult_scale: ``[B]`` float32. Half-width of the multiplicative noise ``1 + U(-s, s)`` (0: none).
    sparsity: ``[]`` float32 in [0, 1]. Each noise entry is dropped where a uniform draw is
      below it (NoisyMix's convention: 0 keeps all noise).
    key: PRNG key for the activation-shaped noise draws.
  """

  layer: jax.Array
  partner: jax.Array
  lam: jax.Array
  add_scale: jax.Array
  mult_scale: jax.Array
  sparsity: jax.Array
  key: jax.Array


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """Reshapes ``[B]`` to ``[B, 1, ..., 1]`` so it broadcasts against ``like`` without promotion."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1)).astype(like.dtype)


def mix_and_perturb(h: jax.Array, plan: MixPlan, *, position: int) -> jax.Array:
  """Unconditionally mixes ``h [B, ...]`` with its partners and adds the plan's sparse noise."""
  lam = _per_example(plan.lam, h)
  mixed = lam * h + (1.0 - lam) * h[plan.partner]
  key = jax.random.fold_in(plan.key, position)
  k_add, k_add_mask, k_mult, k_mult_mask = jax.random.split(key, 4)
  sparsity = plan.sparsity.astype(h.dtype)
  add_keep = jax.random.uniform(k_add_mask, h.shape, h.dtype) >= sparsity
  additive = _per_example(plan.add_scale, h) * jax.random.normal(k_add, h.shape, h.dtype)
  additive = jnp.where(add_keep, additive, 0.0)
  mult_keep = jax.random.uniform(k_mult_mask, h.shape, h.dtype) >= sparsity
  multiplicative = 1.0 + _per_example(plan.mult_scale, h) * jax.random.uniform(
      k_mult, h.shape, h.dtype, minval=-1.0, maxval=1.0)
  multiplicative = jnp.where(mult_keep, multiplicative, 1.0)
  return multiplicative * mixed + additive


def apply_mix_plan(h: jax.Array, plan: MixPlan | None, *, position: int) -> jax.Array:
  """Returns ``h`` mixed and perturbed if ``plan.layer == position``, else ``h`` unchanged.

  Args:
    h: ``[B, ...]`` activations at a candidate mixing position.
    plan: the batch's plan, or ``None`` for a plain forward pass.
    position: static int, this call site's position (0 = input, k = after stage k).

  ``lax.cond`` on the scalar ``plan.layer`` runs only the taken branch, so the noise is drawn
  at one position per step, not at all of them.
  """
  if plan is None:
    return h
  return jax.lax.cond(
      plan.layer == position,
      lambda a: mix_and_perturb(a, plan, position=position),
      lambda a: a,
      h,
  )
