"""Random crop with padding and random horizontal flip: the standard CIFAR preprocessing.

Images are NHWC float32 in [0, 1] inside the library. Every example draws its own crop offset
and flip, from ``key``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from drojax._checks import check_int_range, check_static_int, check_unit_range

_PAD_MODES = ("constant", "edge", "reflect")


def _check_images(images: jax.Array, name: str = "images") -> None:
  if images.ndim != 4:
    raise ValueError(
        f"{name} must be [B, H, W, C] (NHWC); received shape {tuple(images.shape)}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
        f"{name} must be floating point in [0, 1]; received dtype {images.dtype}. "
        "Convert uint8 with images.astype(jnp.float32) / 255.")
  check_unit_range(name, images)


def crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array, *, padding: int = 4,
              pad_mode: str = "constant") -> jax.Array:
  """Deterministic core of ``random_crop_flip``: pads, crops at given offsets, flips.

  ``out[i] = flip_i(pad(images[i])[dy_i : dy_i + H, dx_i : dx_i + W])`` where
  ``(dy_i, dx_i) = offsets[i]`` in ``[0, 2 * padding]`` and ``flip_i`` mirrors the width axis
  when ``flips[i]`` is true.

  Args:
    images: ``[B, H, W, C]`` float images.
    offsets: ``[B, 2]`` int32 crop offsets ``(dy, dx)`` into the padded image, in
      ``[0, 2 * padding]`` (checked when concrete; NaN images for that example under ``jit``).
    flips: ``[B]`` bool, whether example ``i`` is mirrored left-right.
    padding: static int, pixels added on each side before cropping.
    pad_mode: static, ``"constant"`` (zeros, as torchvision's ``RandomCrop(32, padding=4)``
      used by the AugMix and DRO-Augment references), ``"edge"`` or ``"reflect"``.

  Returns:
    ``[B, H, W, C]``, same dtype as ``images``.

  Example:
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1) / 16
    >>> y = crop_flip(x, jnp.array([[1, 1]]), jnp.array([False]), padding=1)
    >>> bool(jnp.all(y == x))
    True
  """
  _check_images(images)
  if pad_mode not in _PAD_MODES:
    raise ValueError(f"pad_mode must be one of {_PAD_MODES}; received {pad_mode!r}.")
  check_static_int("padding", padding, minimum=0)
  b, h, w, _ = images.shape
  if offsets.shape != (b, 2):
    raise ValueError(f"offsets must be [B, 2] = {(b, 2)}; received {tuple(offsets.shape)}.")
  if flips.shape != (b,):
    raise ValueError(f"flips must be [B] = {(b,)}; received {tuple(flips.shape)}.")
  p = padding
  check_int_range("offsets", offsets, 0, 2 * p + 1, fix="Crops start in [0, 2 * padding].")
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode=pad_mode)
  # Row/column index arithmetic instead of a vmapped dynamic_slice: two small gathers that
  # fuse well on every backend.
  rows = offsets[:, 0:1] + jnp.arange(h)[None, :]  # [B, H]
  cols = jnp.arange(w)[None, :]
  cols = jnp.where(flips[:, None], w - 1 - cols, cols)
  cols = offsets[:, 1:2] + cols  # [B, W]
  batch = jnp.arange(b)[:, None, None]
  out = padded[batch, rows[:, :, None], cols[:, None, :]]
  # A traced offset outside [0, 2p] would be clamped by the gather: NaN for that example.
  ok = jnp.all((offsets >= 0) & (offsets <= 2 * p), axis=1)[:, None, None, None]
  return jnp.where(ok, out, jnp.nan)


def random_crop_flip(key: jax.Array, images: jax.Array, *, padding: int = 4,
                     pad_mode: str = "constant") -> jax.Array:
  """Random ``padding``-pixel-padded crop and random horizontal flip, per example.

  Each example draws its offsets ``dy, dx ~ U{0, ..., 2 * padding}`` and a fair-coin flip,
  as torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` do in the
  AugMix / DRO-Augment references (zero padding by default).

  Args:
    key: PRNG key.
    images: ``[B, H, W, C]`` float32 images in [0, 1].
    padding: static int, pixels of padding on each side (default 4).
    pad_mode: static, ``"constant"`` (zeros, the reference), ``"edge"`` or ``"reflect"``.

  Returns:
    ``[B, H, W, C]`` augmented images, same dtype; values stay in the input's range.

  Example:
    >>> x = jnp.ones((8, 32, 32, 3))
    >>> random_crop_flip(jax.random.key(0), x).shape
    (8, 32, 32, 3)
  """
  _check_images(images)
  b = images.shape[0]
  k_off, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_off, (b, 2), 0, 2 * padding + 1, dtype=jnp.int32)
  flips = jax.random.bernoulli(k_flip, 0.5, (b,))
  return crop_flip(images, offsets, flips, padding=padding, pad_mode=pad_mode)
