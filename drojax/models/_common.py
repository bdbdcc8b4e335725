"""Pieces shared by the drojax models: the input stem (check, normalize, mix), the pooled
head, and BatchNorm settings.

Models take NHWC float images in [0, 1] and normalize them inside ``__call__``, so attacks and
the W-DRO penalty work in pixel space.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from drojax.augment.mixing import MixPlan, apply_mix_plan

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


def input_stem(x: jax.Array, *, mean: Sequence[float], std: Sequence[float], dtype: Any,
               mix: MixPlan | None) -> jax.Array:
  """Every model's first step: checks ``x [B, H, W, C]`` (float in [0, 1]), normalizes it in
  float32, casts to the compute ``dtype`` and applies the mixing plan at position 0."""
  check_images(x)
  h = normalize(x.astype(jnp.float32), mean, std).astype(dtype)
  return apply_mix_plan(h, mix, position=0)


def pooled_head(h: jax.Array, num_classes: int, *, dtype: Any) -> jax.Array:
  """Every model's last step: global average pooling ``[B, H, W, C] -> [B, C]``, the Dense
  layer ``head``, float32 logits ``[B, num_classes]``. Call it inside a compact module."""
  h = jnp.mean(h, axis=(1, 2))
  return nn.Dense(num_classes, dtype=dtype, name="head")(h).astype(jnp.float32)
