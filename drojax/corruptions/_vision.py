"""Small OpenCV-like image operations in JAX used by the spatter corruption.

All act on one single-channel image ``[H, W]`` holding 8-bit values as float32 (vmap them).
They follow OpenCV's documented semantics (Canny, distanceTransform, equalizeHist, blur,
filter2D with 8-bit saturation); differences are noted per function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from drojax.corruptions._common import _pad_safe

Array = jax.Array

_TAN22 = 0.4142135623730950


def _correlate3(img: Array, kernel: np.ndarray, mode: str) -> Array:
  h, w = img.shape
  p = _pad_safe(_pad_safe(img[None], 1, 1, mode), 2, 1, mode)[0]
  out = jnp.zeros_like(img)
  for i in range(3):
    for j in range(3):
      if kernel[i, j] != 0:
        out = out + float(kernel[i, j]) * p[i:i + h, j:j + w]
  return out


def box_blur3(img: Array) -> Array:
  """``cv2.blur(img, (3, 3))``: 3x3 mean with the default REFLECT_101 border (float result)."""
  return _correlate3(img, np.ones((3, 3)) / 9.0, "reflect")


def canny(img: Array, low: float, high: float) -> Array:
  """``cv2.Canny(img, low, high)`` as a boolean edge map ``[H, W]``.

  Sobel 3x3 gradients (replicated border), L1 magnitude ``|gx| + |gy|``, non-maximum
  suppression along the gradient direction quantized to 0/45/90/135 degrees with OpenCV's
  tie rules, and hysteresis: candidates (magnitude > ``low`` surviving suppression) are kept
  when 8-connected to a strong one (magnitude > ``high``). Hysteresis runs ``H * W // 4``
  dilation steps, enough for any edge on small images.
  """
  h, w = img.shape
  gx = _correlate3(img, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32), "edge")
  gy = _correlate3(img, np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], np.float32), "edge")
  mag = jnp.abs(gx) + jnp.abs(gy)
  p = jnp.pad(mag, 1)  # magnitude outside the image is 0

  def at(dy, dx):
    return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

  ax, ay = jnp.abs(gx), jnp.abs(gy)
  horiz = ay < ax * _TAN22
  vert = ay > ax * (_TAN22 + 2.0)
  same_sign = (gx * gy) >= 0  # OpenCV: s = -1 when the signs differ
  keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
  keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
  keep_d_pos = (mag > at(-1, -1)) & (mag > at(1, 1))
  keep_d_neg = (mag > at(-1, 1)) & (mag > at(1, -1))
  keep_d = jnp.where(same_sign, keep_d_pos, keep_d_neg)
  keep = jnp.where(horiz, keep_h, jnp.where(vert, keep_v, keep_d))
  cand = keep & (mag > low)
  strong = cand & (mag > high)

  def grow(_, e):
    ep = jnp.pad(e, 1)
    nb = jnp.zeros_like(e)
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        nb = nb | ep[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return e | (nb & cand)

  return jax.lax.fori_loop(0, max(1, h * w // 4), grow, strong)


def distance_to(mask: Array) -> Array:
  """Euclidean distance from each pixel to the nearest ``True`` of ``mask`` (inf if none).

  OpenCV's ``distanceTransform(DIST_L2, 5)`` uses a 5x5 chamfer approximation; this is exact
  (two separable passes of brute-force minima, fine for CIFAR-sized images).
  """
  h, w = mask.shape
  big = jnp.float32(1e9)
  rows = jnp.arange(h, dtype=jnp.float32)
  cols = jnp.arange(w, dtype=jnp.float32)
  # Column pass: squared vertical distance to the nearest masked pixel in the same column.
  dv = jnp.where(mask[None, :, :], (rows[:, None, None] - rows[None, :, None]) ** 2, big)
  g = jnp.min(dv, axis=1)  # [h, w]
  # Row pass.
  d2 = jnp.min(g[:, None, :] + (cols[:, None] - cols[None, :])[None] ** 2, axis=2)
  return jnp.where(d2 >= big, jnp.inf, jnp.sqrt(d2))


def equalize_hist(img: Array) -> Array:
  """``cv2.equalizeHist`` on 8-bit values: ``round(255 * (cdf(v) - n_min) / (N - n_min))``.

  ``n_min`` is the count of the smallest value; a constant image is returned unchanged.
  """
  v = img.astype(jnp.int32).reshape(-1)
  hist = jnp.zeros((256,), jnp.int32).at[v].add(1)
  cdf = jnp.cumsum(hist)
  total = v.shape[0]
  first = jnp.min(v)
  n_min = hist[first]
  scale = 255.0 / jnp.maximum(total - n_min, 1)
  lut = jnp.clip(jnp.round((cdf - n_min) * scale), 0, 255).astype(jnp.float32)
  out = lut[v].reshape(img.shape)
  return jnp.where(n_min == total, img, out)


def emboss_u8(img: Array) -> Array:
  """``cv2.filter2D(img, CV_8U, [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])``: rounded, saturated."""
  k = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float32)
  return jnp.clip(jnp.round(_correlate3(img, k, "reflect")), 0.0, 255.0)
