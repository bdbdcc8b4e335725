"""NoisyMix (Erichson et al., 2022): manifold mixup plus sparse noise, as a ``MixPlan``.

Images are NHWC float32 in [0, 1] inside the library. NoisyMix mixes a batch at a random
layer (the input, or after one of the network's stages) and perturbs the mixed activations
with sparse additive and multiplicative noise. The plan is drawn here, outside the model; the
model calls ``drojax.augment.mixing.apply_mix_plan`` at each candidate position, where
``mix_and_perturb`` computes ``(1 + m * U(-1, 1)) * (lam h_i + (1 - lam) h_partner) + a * N(0, 1)``
with each noise entry dropped where a uniform draw is below ``sparsity``.

Draws (following erichson/NoisyMix ``noisy_mixup.py`` and the recipe in
``shared/reference/recipes.md``):

* ``lam ~ Beta(alpha, alpha)`` and one partner permutation of the ``B`` examples; every view
  ``v`` of example ``i`` is mixed with view ``v`` of example ``perm[i]`` (the reference mixes
  each third of its concatenated JSD batch with the same permutation), so the mixed targets
  ``lam y_i + (1 - lam) y_perm[i]`` are per example.
* ``layer`` uniform in ``{0, ..., max_layer}`` when ``manifold`` (``max_layer = 4``: the input
  or after stage 1..4, as DRO-Augment's PreActResNet; erichson/NoisyMix's own PreActResNet
  draws from {0, 1, 2, 3}), else 0.
* additive scale ``add_level * (v + 1) * Beta(2, 5)`` for view ``v`` (levels x1, x2, x3 over
  the three JSD views; ``view_levels=False`` gives every view ``add_level``), multiplicative
  scale ``mult_level * Beta(2, 5)``.

By default (``per_example=False``) ``lam`` is one draw per batch and the Beta(2, 5) factors
one draw per view, like the reference; ``per_example=True`` draws them per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drojax._checks import check_distribution, check_hyper, check_static_int
from drojax.augment import _random
from drojax.augment.mixing import MixPlan


def mixup_partner_rows(partner: jax.Array, num_views: int) -> jax.Array:
  """``[B]`` example partners -> ``[V * B]`` rows of the view-major model batch.

  Row ``v * B + i`` (view ``v`` of example ``i``) is mixed with row ``v * B + partner[i]``.
  """
  b = partner.shape[0]
  return (jnp.arange(num_views, dtype=jnp.int32)[:, None] * b + partner[None, :]).reshape(-1)


def sample_noisymix_plan(key: jax.Array, targets: jax.Array, *, num_views: int = 1,
                         alpha: float = 1.0, manifold: bool = True, max_layer: int = 4,
                         add_level: float = 0.1, mult_level: float = 0.1,
                         sparsity: float = 0.2, view_levels: bool = True,
                         per_example: bool = False) -> tuple[MixPlan, jax.Array]:
  """Draws a NoisyMix plan for a ``[V * B]`` view-major model batch and mixes the targets.

  Args:
    key: PRNG key.
    targets: ``[B, K]`` float soft targets.
    num_views: static ``V`` (3 with AugMix/JSD views, 1 otherwise).
    alpha: mixup's Beta concentration (> 0).
    manifold: static; draw the mixing layer from ``{0, ..., max_layer}`` (else 0, the input).
    max_layer: static, the deepest mixing position the model offers (4 for PreActResNet-18).
    add_level: additive noise level (>= 0); 0 disables the additive noise.
    mult_level: multiplicative noise level (>= 0); 0 disables it.
    sparsity: in [0, 1], the probability that a noise entry is dropped.
    view_levels: static; view ``v`` gets additive level ``add_level * (v + 1)``.
    per_example: static; draw ``lam`` and the Beta(2, 5) factors per example instead of per
      batch (per view).

  Returns:
    ``(plan, mixed_targets)``: a ``MixPlan`` whose arrays are ``[V * B]``, and ``[B, K]``
    targets ``lam_i y_i + (1 - lam_i) y_{perm[i]}``.

  Example:
    >>> y = jax.nn.one_hot(jnp.arange(4), 4)
    >>> plan, t = sample_noisymix_plan(jax.random.key(0), y, num_views=3)
    >>> plan.partner.shape, plan.add_scale.shape, t.shape
    ((12,), (12,), (4, 4))
  """
  if targets.ndim != 2 or not jnp.issubdtype(targets.dtype, jnp.floating):
    raise TypeError(f"targets must be [B, K] float soft targets; received shape "
                    f"{tuple(targets.shape)}, dtype {targets.dtype}.")
  check_static_int("num_views", num_views, minimum=1)
  check_hyper("alpha", alpha, low=0.0, low_open=True, expected="> 0 and finite")
  for name, value in (("add_level", add_level), ("mult_level", mult_level)):
    check_hyper(name, value, low=0.0, expected=">= 0 and finite")
  check_hyper("sparsity", sparsity, low=0.0, high=1.0, expected="in [0, 1]")
  check_static_int("max_layer", max_layer, minimum=0)
  check_distribution("targets", targets)
  b = targets.shape[0]
  v = num_views
  k_lam, k_perm, k_layer, k_add, k_mult, k_noise = jax.random.split(key, 6)
  lam = _random.beta(k_lam, alpha, alpha, (b,) if per_example else ())
  lam = jnp.broadcast_to(lam, (b,))
  perm = jax.random.permutation(k_perm, b).astype(jnp.int32)
  if manifold:
    layer = jax.random.randint(k_layer, (), 0, max_layer + 1, dtype=jnp.int32)
  else:
    layer = jnp.zeros((), jnp.int32)
  noise_shape = (v, b) if per_example else (v, 1)
  add_factor = jnp.broadcast_to(_random.beta(k_add, 2, 5, noise_shape), (v, b))
  mult_factor = jnp.broadcast_to(_random.beta(k_mult, 2, 5, noise_shape), (v, b))
  view_scale = (jnp.arange(v, dtype=jnp.float32) + 1.0) if view_levels else jnp.ones(v)
  add_scale = add_level * view_scale[:, None] * add_factor
  mult_scale = mult_level * mult_factor
  ly = lam[:, None].astype(targets.dtype)
  mixed_targets = ly * targets + (1.0 - ly) * targets[perm]
  plan = MixPlan(
      layer=layer,
      partner=mixup_partner_rows(perm, v),
      lam=jnp.tile(lam, v).astype(jnp.float32),
      add_scale=add_scale.reshape(-1).astype(jnp.float32),
      mult_scale=mult_scale.reshape(-1).astype(jnp.float32),
      sparsity=jnp.asarray(sparsity, jnp.float32),
      key=k_noise,
  )
  return plan, mixed_targets
