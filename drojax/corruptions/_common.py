"""Shared helpers for the CIFAR-C corruptions: static-or-traced parameters, filters, HSV, zoom.

Images are NHWC float32 in [0, 1]. Nothing here draws randomness.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def is_static(value: Any) -> bool:
  """True when ``value`` is a concrete Python/NumPy number (usable to size arrays)."""
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def static_bound(value: Any, bound: float) -> float:
  """``value`` when it is static, else the documented upper ``bound`` used to size arrays."""
  return float(value) if is_static(value) else float(bound)


def gaussian_taps(sigma: Any, radius: int) -> Array:
  """1-D Gaussian weights on ``[-radius, radius]``, normalized; sigma 0 gives a delta.

  Matches ``scipy.ndimage.gaussian_filter1d``'s kernel ``exp(-x^2 / (2 sigma^2))`` normalized
  over the support. Taps beyond ``int(truncate * sigma + 0.5)`` are the caller's business
  (see :func:`gaussian_taps_truncated`).
  """
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma = jnp.asarray(sigma, jnp.float32)
  safe = jnp.maximum(sigma, 1e-6)
  w = jnp.exp(-0.5 * (x / safe) ** 2)
  w = w / jnp.sum(w)
  delta = (x == 0).astype(jnp.float32)
  return jnp.where(sigma > 0, w, delta)


def gaussian_taps_truncated(sigma: Any, truncate: float, bound: float) -> Array:
  """Gaussian taps with scipy's truncation, sized statically; traced sigma masks the extra taps."""
  radius = int(truncate * static_bound(sigma, bound) + 0.5)  # scipy's support radius
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  sigma_arr = jnp.asarray(sigma, jnp.float32)
  live = jnp.abs(x) <= jnp.floor(truncate * sigma_arr + 0.5)
  safe = jnp.maximum(sigma_arr, 1e-6)
  w = jnp.where(live, jnp.exp(-0.5 * (x / safe) ** 2), 0.0)
  w = w / jnp.sum(w)
  delta = (x == 0).astype(jnp.float32)
  return jnp.where(sigma_arr > 0, w, delta)


def _pad_safe(images: Array, axis: int, pad: int, mode: str) -> Array:
  """Pads one axis, repeating the reflection when ``pad`` exceeds the size (scipy semantics)."""
  if pad == 0:
    return images
  n = images.shape[axis]
  idx = np.arange(-pad, n + pad)
  if mode == "edge":
    idx = np.clip(idx, 0, n - 1)
  elif mode == "symmetric":  # scipy 'reflect': d c b a | a b c d | d c b a
    period = 2 * n
    idx = np.mod(idx, period)
    idx = np.where(idx >= n, period - 1 - idx, idx)
  elif mode == "reflect":  # OpenCV REFLECT_101 / scipy 'mirror': d c b | a b c d | c b a
    if n == 1:
      idx = np.zeros_like(idx)
    else:
      period = 2 * n - 2
      idx = np.mod(idx, period)
      idx = np.where(idx >= n, period - idx, idx)
  else:
    raise ValueError(f"unknown pad mode {mode!r}")
  return jnp.take(images, jnp.asarray(idx), axis=axis)


def separable_filter(images: Array, taps_h: Array, taps_w: Array, *, mode: str) -> Array:
  """Correlates each channel of NHWC (or NHW) images with ``taps_h`` along H, then ``taps_w``
  along W.

  Args:
    images: ``[N, H, W, C]`` or ``[N, H, W]``.
    taps_h: odd-length 1-D taps for the H axis (static length).
    taps_w: odd-length 1-D taps for the W axis.
    mode: border handling, ``'edge'`` (scipy 'nearest'), ``'symmetric'`` (scipy 'reflect') or
      ``'reflect'`` (OpenCV REFLECT_101).
  """
  rh = (taps_h.shape[0] - 1) // 2
  rw = (taps_w.shape[0] - 1) // 2
  x = _pad_safe(images, 1, rh, mode)
  h = images.shape[1]
  out = sum(taps_h[i] * x[:, i:i + h] for i in range(taps_h.shape[0]))
  x = _pad_safe(out, 2, rw, mode)
  w = images.shape[2]
  return sum(taps_w[i] * x[:, :, i:i + w] for i in range(taps_w.shape[0]))


def gaussian_filter(images: Array, sigma: Any, *, mode: str = "edge", truncate: float = 4.0,
                    bound: float = 8.0) -> Array:
  """scipy/skimage-style Gaussian blur over H and W of each channel (``sigma`` in pixels)."""
  taps = gaussian_taps_truncated(sigma, truncate, bound)
  return separable_filter(images, taps, taps, mode=mode)


def filter2d(images: Array, kernel: Array, *, mode: str = "reflect") -> Array:
  """Correlates every channel of NHWC images with a 2-D ``kernel`` (odd, static size)."""
  kh, kw = kernel.shape
  x = _pad_safe(_pad_safe(images, 1, kh // 2, mode), 2, kw // 2, mode)
  h, w = images.shape[1], images.shape[2]
  out = jnp.zeros_like(images)
  for i in range(kh):
    for j in range(kw):
      out = out + kernel[i, j] * x[:, i:i + h, j:j + w]
  return out


# ----------------------------------------------------------------------------- HSV (skimage)


def rgb_to_hsv(rgb: Array) -> Array:
  """scikit-image's ``rgb2hsv`` on ``[..., 3]`` arrays (hue in [0, 1))."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  safe_delta = jnp.where(delta == 0, 1.0, delta)
  s = jnp.where(delta == 0, 0.0, delta / jnp.where(v == 0, 1.0, v))
  # Later cases win, as in skimage (blue over green over red).
  h = (g - b) / safe_delta
  h = jnp.where(g == v, 2.0 + (b - r) / safe_delta, h)
  h = jnp.where(b == v, 4.0 + (r - g) / safe_delta, h)
  h = jnp.mod(h / 6.0, 1.0)
  h = jnp.where(delta == 0, 0.0, h)
  return jnp.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: Array) -> Array:
  """scikit-image's ``hsv2rgb`` on ``[..., 3]`` arrays."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hi = jnp.floor(h * 6.0)
  f = h * 6.0 - hi
  p = v * (1 - s)
  q = v * (1 - f * s)
  t = v * (1 - (1 - f) * s)
  hi = jnp.mod(hi.astype(jnp.int32), 6)
  choices = jnp.stack([
      jnp.stack([v, t, p], -1), jnp.stack([q, v, p], -1), jnp.stack([p, v, t], -1),
      jnp.stack([p, q, v], -1), jnp.stack([t, p, v], -1), jnp.stack([v, p, q], -1)], 0)
  onehot = jax.nn.one_hot(hi, 6, dtype=hsv.dtype)  # [..., 6]
  return jnp.einsum("k...c,...k->...c", choices, onehot)


# ----------------------------------------------------------------------------- zoom


def clipped_zoom_matrix(size: int, zoom: Any) -> Array:
  """Linear map ``[size, size]`` of the reference's ``clipped_zoom`` along one axis.

  The reference crops the central ``ch = ceil(size / zoom)`` pixels, resizes them with
  ``scipy.ndimage.zoom(order=1)`` to ``round(ch * zoom)`` pixels (scipy maps output ``o`` to
  input ``o * (ch - 1) / (out - 1)``) and trims the centre ``size`` pixels back. Row ``i`` of
  the returned matrix holds the bilinear weights of output pixel ``i`` over input pixels.
  Works for a static or traced ``zoom >= 1``.
  """
  z = jnp.asarray(zoom, jnp.float32)
  if is_static(zoom):
    ch = int(math.ceil(size / float(zoom)))
    out = int(round(ch * float(zoom)))
    top = (size - ch) // 2
    trim = (out - size) // 2
    scale = (ch - 1) / (out - 1) if out > 1 else 0.0
    coords = top + (np.arange(size) + trim) * scale
    coords = jnp.asarray(coords, jnp.float32)
  else:
    ch = jnp.ceil(size / z - 1e-6)
    out = jnp.round(ch * z)
    top = jnp.floor((size - ch) / 2)
    trim = jnp.floor((out - size) / 2)
    scale = (ch - 1) / jnp.maximum(out - 1, 1)
    coords = top + (jnp.arange(size, dtype=jnp.float32) + trim) * scale
  j = jnp.arange(size, dtype=jnp.float32)
  return jnp.maximum(0.0, 1.0 - jnp.abs(coords[:, None] - j[None, :]))
