"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt and pepper) and speckle.

Images are NHWC float32 in [0, 1]; every function is ``f(key, images, params)`` with ``params``
a tuple of scalars (Python floats or JAX scalars), draws independent noise per example from
``key`` and returns the image clipped to [0, 1]. Following ``make_cifar_c.py``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def _per_example(fn, key: Array, images: Array) -> Array:
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(fn)(keys, images)


def gaussian_noise(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Additive Gaussian noise, :math:`\mathrm{clip}(x + \epsilon)`, :math:`\epsilon \sim N(0, c^2)`.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(c,)``, the noise standard deviation.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].

  >>> import jax, jax.numpy as jnp
  >>> gaussian_noise(jax.random.key(0), jnp.full((1, 4, 4, 3), .5), (.04,)).shape
  (1, 4, 4, 3)
  """
  (c,) = params

  def one(k, x):
    return x + c * jax.random.normal(k, x.shape, x.dtype)

  return jnp.clip(_per_example(one, key, images), 0.0, 1.0)


_SMALL_LAM = 10.0
_SEARCH_STEPS = 40   # P(X > 40 | lam < 10) < 1e-11


def poisson(key: Array, lam: Array) -> Array:
  """Exact Poisson samples with means ``lam`` (float32 counts), faster on CPU than JAX's alone.

  ``jax.random.poisson`` evaluates both of its algorithms for every value, and its Knuth
  branch (for means below 10) loops ~25 times drawing fresh uniforms for all values. Here
  means below 10 use inversion of the CDF by sequential search from 0 (one uniform per value,
  40 arithmetic steps), and only the others go to ``jax.random.poisson`` (its transformed
  rejection). Measured ~2.5x faster for CIFAR-sized batches on this CPU.

  Args:
    key: PRNG key.
    lam: non-negative means, any shape.

  Returns:
    float32 array of counts, the shape of ``lam``.
  """
  lam = jnp.asarray(lam, jnp.float32)
  k_small, k_big = jax.random.split(key)
  small = lam < _SMALL_LAM
  # Small means: X = min{k : F(k) >= u}, F accumulated term by term.
  small_lam = jnp.where(small, lam, 0.0)
  u = jax.random.uniform(k_small, lam.shape)
  p = jnp.exp(-small_lam)
  cdf = p
  count = jnp.zeros_like(lam)
  for i in range(1, _SEARCH_STEPS + 1):
    count = count + (u > cdf)
    p = p * small_lam / i
    cdf = cdf + p
  big = jax.random.poisson(k_big, jnp.where(small, _SMALL_LAM, lam), lam.shape)
  return jnp.where(small, count, big.astype(jnp.float32))


def shot_noise(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Poisson (shot) noise, :math:`\mathrm{clip}(\mathrm{Poisson}(c\,x) / c)`.

  Samples with :func:`poisson`.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(c,)``, the photon rate at intensity 1; ``inf`` means no noise.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  (c,) = params
  c = jnp.asarray(c, jnp.float32)
  finite = jnp.isfinite(c)
  rate = jnp.where(finite, c, 1.0)

  def one(k, x):
    return poisson(k, x * rate) / rate

  noisy = _per_example(one, key, images)
  return jnp.clip(jnp.where(finite, noisy, images), 0.0, 1.0)


def impulse_noise(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Salt-and-pepper noise as scikit-image's ``random_noise(mode='s&p')``.

  Each value (every channel independently) is replaced with probability ``amount``, by 1 or 0
  with equal odds.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(amount,)``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  (amount,) = params

  def one(k, x):
    k1, k2 = jax.random.split(k)
    flipped = jax.random.uniform(k1, x.shape) < amount
    salted = jax.random.bernoulli(k2, 0.5, x.shape)
    return jnp.where(flipped, salted.astype(x.dtype), x)

  return jnp.clip(_per_example(one, key, images), 0.0, 1.0)


def speckle_noise(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Multiplicative noise, :math:`\mathrm{clip}(x + x\,\epsilon)`, :math:`\epsilon \sim N(0, c^2)`.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(c,)``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  (c,) = params

  def one(k, x):
    return x + x * c * jax.random.normal(k, x.shape, x.dtype)

  return jnp.clip(_per_example(one, key, images), 0.0, 1.0)
