"""Loop-free samplers for the Beta and Dirichlet draws of the augmentations.

``jax.random.beta`` / ``dirichlet`` go through ``jax.random.gamma``'s rejection loop, which
costs several seconds of compile time per call site on CPU (~17 s for AugMix's per-example
draws). For the integer concentrations the references use (Mixup and AugMix ``alpha = 1``,
NoisyMix's Beta(2, 5)), ``Gamma(k, 1)`` is exactly a sum of ``k`` unit exponentials, so these
draws need no loop; other concentrations fall back to ``jax.random``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MAX_INTEGER_SHAPE = 16  # sum at most this many exponentials; larger shapes use jax.random


def _small_integer(value) -> int | None:
  try:
    v = float(value)
  except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
    return None  # traced concentration: use the generic sampler
  if v.is_integer() and 1 <= v <= _MAX_INTEGER_SHAPE:
    return int(v)
  return None


def _gamma_integer(key: jax.Array, k: int, shape: tuple[int, ...]) -> jax.Array:
  """``Gamma(k, 1)`` for a static integer ``k`` as the sum of ``k`` unit exponentials."""
  return jnp.sum(jax.random.exponential(key, (k,) + shape, jnp.float32), axis=0)


def beta(key: jax.Array, a, b, shape: tuple[int, ...] = ()) -> jax.Array:
  """``Beta(a, b)`` float32 draws of ``shape``; exact and loop-free for integer ``a, b``."""
  ia, ib = _small_integer(a), _small_integer(b)
  if ia is None or ib is None:
    return jax.random.beta(key, a, b, shape, dtype=jnp.float32)
  ka, kb = jax.random.split(key)
  ga = _gamma_integer(ka, ia, shape)
  gb = _gamma_integer(kb, ib, shape)
  return ga / (ga + gb)


def dirichlet(key: jax.Array, alpha, size: int, shape: tuple[int, ...] = ()) -> jax.Array:
  """``Dirichlet(alpha 1_size)`` float32 draws of ``shape + (size,)``; loop-free for integers."""
  ia = _small_integer(alpha)
  if ia is None:
    return jax.random.dirichlet(key, jnp.full((size,), alpha, jnp.float32), shape,
                                dtype=jnp.float32)
  g = _gamma_integer(key, ia, shape + (size,))
  return g / jnp.sum(g, axis=-1, keepdims=True)
