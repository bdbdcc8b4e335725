"""Pieces shared by the drojax models: input normalization and BatchNorm settings.

Models take NHWC float images in [0, 1] and normalize them inside ``__call__``, so attacks and
the W-DRO penalty work in pixel space.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

# PyTorch's BatchNorm momentum 0.1 is Flax's 0.9 (weight of the running value).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def check_images(x: jax.Array, *, name: str = "x") -> None:
  """Raises if ``x`` is not a float NHWC batch."""
  if x.ndim != 4:
    raise ValueError(f"{name} must be NHWC [B, H, W, C], got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{name} must be float images in [0, 1], got dtype {x.dtype}; convert uint8 with x / 255")


def normalize(x: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """Returns ``(x - mean) / std`` per channel; ``mean``/``std`` have length 1 or ``C``."""
  channels = x.shape[-1]
  if len(mean) not in (1, channels) or len(std) not in (1, channels):
    raise ValueError(
        f"mean/std must have 1 or {channels} entries (the image channels), "
        f"got {len(mean)} and {len(std)}")
  m = jnp.asarray(mean, x.dtype).reshape((1, 1, 1, -1))
  s = jnp.asarray(std, x.dtype).reshape((1, 1, 1, -1))
  return (x - m) / s
