"""Digital corruptions: brightness, contrast, saturate, pixelate, JPEG and elastic transform.

Images are NHWC float32 in [0, 1]; every function is ``f(key, images, params)`` (``key`` is
unused by the deterministic ones but kept for a uniform signature) and returns the image
clipped to [0, 1]. Following ``make_cifar_c.py`` (hendrycks/robustness); our own code.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax.corruptions import _common

Array = jax.Array

# Bound on elastic's smoothing sigma (a fraction of the image side) used to size the filter
# when the parameters are traced; static parameters size it exactly.
ELASTIC_SIGMA_BOUND = 0.25


def brightness(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Adds ``c`` to the HSV value channel (scikit-image's HSV), clipped to [0, 1].

  Args:
    key: unused.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(c,)``.

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].

  >>> import jax, jax.numpy as jnp
  >>> float(brightness(None, jnp.full((1, 2, 2, 3), .5), (.1,))[0, 0, 0, 0])
  0.6...
  """
  del key
  (c,) = params
  hsv = _common.rgb_to_hsv(images)
  v = jnp.clip(hsv[..., 2] + c, 0.0, 1.0)
  hsv = jnp.stack([hsv[..., 0], hsv[..., 1], v], axis=-1)
  return jnp.clip(_common.hsv_to_rgb(hsv), 0.0, 1.0)


def saturate(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """HSV saturation ``s -> clip(s * scale + offset, 0, 1)`` (scikit-image's HSV).

  Args:
    key: unused.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(scale, offset)``.

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].
  """
  del key
  scale, offset = params
  hsv = _common.rgb_to_hsv(images)
  s = jnp.clip(hsv[..., 1] * scale + offset, 0.0, 1.0)
  hsv = jnp.stack([hsv[..., 0], s, hsv[..., 2]], axis=-1)
  return jnp.clip(_common.hsv_to_rgb(hsv), 0.0, 1.0)


def contrast(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Scales each channel about its per-image mean: :math:`(x - \bar x_c)\,c + \bar x_c`.

  Args:
    key: unused.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(c,)``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  del key
  (c,) = params
  means = jnp.mean(images, axis=(1, 2), keepdims=True)
  return jnp.clip((images - means) * c + means, 0.0, 1.0)


# ----------------------------------------------------------------------------- pixelate


_PIL_BITS = 22  # PIL's PRECISION_BITS for 8-bit resampling: weights in units of 2^-22


def _box_matrices(size: int, factor: Any) -> tuple[Array, Array]:
  """PIL's BOX resize of one axis to ``int(size * factor)`` pixels and back, as 0/1 matrices.

  Returns ``(down [size, size], up [size, size])``: ``down[j, i]`` is 1 when big pixel ``i``'s
  centre falls in small pixel ``j``'s footprint ``(c - s/2, c + s/2]`` (``s`` the scale, ``c``
  the footprint centre; rows ``j >= n`` are empty), ``up[i, j]`` likewise for the upscale
  (footprint 1 around ``(i + 0.5) n / size``). PIL normalizes each row.
  """
  if _common.is_static(factor):
    n = jnp.asarray(float(int(size * float(factor))), jnp.float32)
  else:
    n = jnp.floor(size * jnp.asarray(factor, jnp.float32) + 1e-4)
  n = jnp.clip(n, 1.0, float(size))
  j = jnp.arange(size, dtype=jnp.float32)  # candidate small-image pixels (at most ``size``)
  i = jnp.arange(size, dtype=jnp.float32)  # big-image pixels
  live = j < n
  scale = size / n
  centre = (j + 0.5) * scale
  pos = i + 0.5
  down = ((pos[None, :] > centre[:, None] - scale / 2)
          & (pos[None, :] <= centre[:, None] + scale / 2) & live[:, None])
  centre_up = (i + 0.5) * (n / size)
  posj = j + 0.5
  up = ((posj[None, :] > centre_up[:, None] - 0.5)
        & (posj[None, :] <= centre_up[:, None] + 0.5) & live[None, :])
  return down.astype(jnp.int32), up.astype(jnp.int32)


def _pil_weights(mask: Array) -> Array:
  """PIL's fixed-point weights of a 0/1 support: ``int(0.5 + 2^22 / count)`` per row."""
  count = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(jnp.float32)
  return mask * jnp.floor(0.5 + (2.0 ** _PIL_BITS) / count).astype(jnp.int32)


def _pil_pass(levels: Array, weights: Array, axis: int) -> Array:
  """One PIL resampling pass over ``axis`` of int32 levels: rounded fixed-point sum, clamped."""
  out = jnp.tensordot(levels, weights, axes=[[axis], [1]])  # the new axis lands last
  out = jnp.moveaxis(out, -1, axis)
  return jnp.clip((out + (1 << (_PIL_BITS - 1))) >> _PIL_BITS, 0, 255)


def pixelate(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """PIL BOX downscale to ``int(side * c)`` pixels and BOX upscale back, as the reference.

  Bit-exact with PIL on 8-bit images: the image is quantized to 8 bits (rounded), and each
  of PIL's four passes (width then height, down then up) sums with PIL's 22-bit fixed-point
  weights and rounds back to 8 bits.

  Args:
    key: unused.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(c,)``, the downscale factor in (0, 1].

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1], multiples of 1/255.
  """
  del key
  (c,) = params
  down_h, up_h = _box_matrices(images.shape[1], c)
  down_w, up_w = _box_matrices(images.shape[2], c)
  x = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.int32)
  x = _pil_pass(x, _pil_weights(down_w), 2)
  x = _pil_pass(x, _pil_weights(down_h), 1)
  x = _pil_pass(x, _pil_weights(up_w), 2)
  x = _pil_pass(x, _pil_weights(up_h), 1)
  return x.astype(jnp.float32) / 255.0


# ----------------------------------------------------------------------------- JPEG

# ITU-T T.81 Annex K quantization tables (luminance, chrominance), natural order.
_LUMA_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float32)
_CHROMA_Q = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99], np.float32)


def jpeg_quant_tables(quality: Any) -> tuple[Array, Array]:
  """IJG quality-scaled baseline tables ``([8, 8] luma, [8, 8] chroma)``, as ``jpeg_set_quality``.

  ``scale = 5000 / q`` (integer division) for ``q < 50``, else ``200 - 2 q``; each entry
  ``clip(floor((base * scale + 50) / 100), 1, 255)``.
  """
  q = jnp.clip(jnp.asarray(quality, jnp.float32), 1.0, 100.0)
  scale = jnp.where(q < 50, jnp.floor(5000.0 / q), 200.0 - 2.0 * q)

  def make(base):
    t = jnp.floor((jnp.asarray(base) * scale + 50.0) / 100.0)
    return jnp.clip(t, 1.0, 255.0).reshape(8, 8)

  return make(_LUMA_Q), make(_CHROMA_Q)


# libjpeg's "islow" integer DCT (the default of PIL's encoder and decoder): 13-bit constants,
# two extra bits of precision between the passes.
_CONST_BITS = 13
_PASS1_BITS = 2


def _fix(x: float) -> int:
  return int(x * (1 << _CONST_BITS) + 0.5)


_F0298, _F0390, _F0541, _F0765 = _fix(0.298631336), _fix(0.390180644), _fix(0.541196100), \
    _fix(0.765366865)
_F0899, _F1175, _F1501, _F1847 = _fix(0.899976223), _fix(1.175875602), _fix(1.501321110), \
    _fix(1.847759065)
_F1961, _F2053, _F2562, _F3072 = _fix(1.961570560), _fix(2.053119869), _fix(2.562915447), \
    _fix(3.072711026)


def _descale(x: Array, n: int) -> Array:
  return (x + (1 << (n - 1))) >> n


def _odd_part(t4, t5, t6, t7):
  """The shared rotation of the odd terms (Loeffler-Ligtenberg-Moschytz), fixed point."""
  z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
  z5 = (z3 + z4) * _F1175
  z1, z2 = z1 * -_F0899, z2 * -_F2562
  z3, z4 = z3 * -_F1961 + z5, z4 * -_F0390 + z5
  return t4 * _F0298 + z1 + z3, t5 * _F2053 + z2 + z4, t6 * _F3072 + z2 + z3, \
      t7 * _F1501 + z1 + z4


def _fdct_pass(d: Array, last: bool) -> Array:
  """One 1-D pass of libjpeg's ``jpeg_fdct_islow`` over the last axis of int32 ``d``."""
  d = [d[..., i] for i in range(8)]
  t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
  t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
  t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
  shift = _CONST_BITS + _PASS1_BITS if last else _CONST_BITS - _PASS1_BITS
  if last:
    o0, o4 = _descale(t10 + t11, _PASS1_BITS), _descale(t10 - t11, _PASS1_BITS)
  else:
    o0, o4 = (t10 + t11) << _PASS1_BITS, (t10 - t11) << _PASS1_BITS
  z1 = (t12 + t13) * _F0541
  o2 = _descale(z1 + t13 * _F0765, shift)
  o6 = _descale(z1 + t12 * -_F1847, shift)
  a7, a5, a3, a1 = _odd_part(t4, t5, t6, t7)
  out = [o0, _descale(a1, shift), o2, _descale(a3, shift), o4, _descale(a5, shift), o6,
         _descale(a7, shift)]
  return jnp.stack(out, axis=-1)


def _idct_pass(c: Array, last: bool) -> Array:
  """One 1-D pass of libjpeg's ``jpeg_idct_islow`` over the last axis of int32 ``c``."""
  c = [c[..., i] for i in range(8)]
  z1 = (c[2] + c[6]) * _F0541
  t2 = z1 + c[6] * -_F1847
  t3 = z1 + c[2] * _F0765
  t0, t1 = (c[0] + c[4]) << _CONST_BITS, (c[0] - c[4]) << _CONST_BITS
  t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
  b0, b1, b2, b3 = _odd_part(c[7], c[5], c[3], c[1])
  shift = _CONST_BITS + _PASS1_BITS + 3 if last else _CONST_BITS - _PASS1_BITS
  out = [t10 + b3, t11 + b2, t12 + b1, t13 + b0, t13 - b0, t12 - b1, t11 - b2, t10 - b3]
  return jnp.stack([_descale(o, shift) for o in out], axis=-1)


def _blocks_roundtrip(plane: Array, table: Array) -> Array:
  """libjpeg's round trip of one plane: level shift, islow DCT, quantize, dequantize, IDCT.

  ``plane``: ``[N, H, W]`` int32 samples 0..255 with H, W multiples of 8; ``table``: ``[8, 8]``
  quantization steps. Quantization rounds half away from zero (``(|c| + 4 q) // 8 q``: the
  forward DCT's output is scaled by 8).
  """
  n, h, w = plane.shape
  blocks = (plane - 128).reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4)
  coef = _fdct_pass(blocks, last=False)                            # rows
  coef = jnp.swapaxes(_fdct_pass(jnp.swapaxes(coef, -1, -2), last=True), -1, -2)  # columns
  q = table.astype(jnp.int32)[None, None, None]  # [v, u] of every block
  div = 8 * q
  quant = jnp.sign(coef) * ((jnp.abs(coef) + div // 2) // div)
  deq = quant * q
  rec = jnp.swapaxes(_idct_pass(jnp.swapaxes(deq, -1, -2), last=False), -1, -2)  # columns
  rec = _idct_pass(rec, last=True)                                 # rows
  rec = jnp.clip(rec + 128, 0, 255)
  return rec.transpose(0, 1, 3, 2, 4).reshape(n, h, w)


def _downsample_2x2(plane: Array) -> Array:
  """libjpeg's h2v2 downsampling: ``(sum of 2x2 + bias) >> 2`` with bias 1, 2, 1, 2, ..."""
  n, h, w = plane.shape
  s = plane.reshape(n, h // 2, 2, w // 2, 2).sum(axis=(2, 4))
  bias = 1 + (jnp.arange(w // 2, dtype=jnp.int32) % 2)
  return (s + bias[None, None, :]) >> 2


def _fancy_upsample_2x2(plane: Array) -> Array:
  """libjpeg's h2v2 "fancy" (triangle) upsampling with its rounding biases."""
  up = jnp.concatenate([plane[:, :1], plane[:, :-1]], axis=1)
  down = jnp.concatenate([plane[:, 1:], plane[:, -1:]], axis=1)
  rows_top = 3 * plane + up      # output row 2r
  rows_bot = 3 * plane + down    # output row 2r + 1
  cols = jnp.stack([rows_top, rows_bot], axis=2)  # [n, h, 2, w]
  n, h, _, w = cols.shape
  cols = cols.reshape(n, 2 * h, w)
  left = jnp.concatenate([cols[:, :, :1], cols[:, :, :-1]], axis=2)
  right = jnp.concatenate([cols[:, :, 1:], cols[:, :, -1:]], axis=2)
  even = (3 * cols + left + 8) >> 4
  odd = (3 * cols + right + 7) >> 4
  return jnp.stack([even, odd], axis=3).reshape(n, 2 * h, 2 * w)


_SCALEBITS = 16
_HALF = 1 << (_SCALEBITS - 1)


def _fix16(x: float) -> int:
  return int(x * (1 << _SCALEBITS) + 0.5)


def jpeg_roundtrip(images: Array, quality: Any) -> Array:
  """Encodes and decodes NHWC RGB images as baseline JPEG at ``quality``, in JAX.

  As libjpeg(-turbo) with PIL's defaults, step by step in its integer arithmetic: quantize to
  8 bits, RGB -> YCbCr (JFIF, 16-bit fixed point), pad to a multiple of 16 by edge replication,
  4:2:0 chroma subsampling, the "islow" integer DCT, division by the IJG quality-scaled tables
  (rounding half away from zero), then the inverse: dequantize, islow inverse DCT, fancy chroma
  upsampling, fixed-point YCbCr -> RGB with clamping.

  Args:
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    quality: 1..100 (Python number or JAX scalar).

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1], multiples of 1/255.
  """
  n, h, w, _ = images.shape
  x = jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0).astype(jnp.int32)
  hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
  x = jnp.pad(x, [(0, 0), (0, hp - h), (0, wp - w), (0, 0)], mode="edge")
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  offset = (128 << _SCALEBITS) + _HALF - 1
  y = (_fix16(0.299) * r + _fix16(0.587) * g + _fix16(0.114) * b + _HALF) >> _SCALEBITS
  cb = (-_fix16(0.16874) * r - _fix16(0.33126) * g + _fix16(0.5) * b + offset) >> _SCALEBITS
  cr = (_fix16(0.5) * r - _fix16(0.41869) * g - _fix16(0.08131) * b + offset) >> _SCALEBITS
  luma_t, chroma_t = jpeg_quant_tables(quality)
  y2 = _blocks_roundtrip(y, luma_t)
  cb2 = _fancy_upsample_2x2(_blocks_roundtrip(_downsample_2x2(cb), chroma_t)) - 128
  cr2 = _fancy_upsample_2x2(_blocks_roundtrip(_downsample_2x2(cr), chroma_t)) - 128
  r2 = y2 + ((_fix16(1.402) * cr2 + _HALF) >> _SCALEBITS)
  g2 = y2 + ((-_fix16(0.34414) * cb2 + _HALF - _fix16(0.71414) * cr2) >> _SCALEBITS)
  b2 = y2 + ((_fix16(1.772) * cb2 + _HALF) >> _SCALEBITS)
  out = jnp.clip(jnp.stack([r2, g2, b2], axis=-1), 0, 255)
  return out[:, :h, :w].astype(jnp.float32) / 255.0


def jpeg_compression(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """JPEG round trip at quality ``q`` (see :func:`jpeg_roundtrip`).

  Args:
    key: unused.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(q,)``.

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].
  """
  del key
  (q,) = params
  return jpeg_roundtrip(images, q)


# ----------------------------------------------------------------------------- elastic


def _reflect_index(i: Array, n: int, mode: str) -> Array:
  if mode == "symmetric":  # scipy 'reflect'
    period = 2 * n
    i = jnp.mod(i, period)
    return jnp.where(i >= n, period - 1 - i, i)
  period = max(2 * n - 2, 1)  # OpenCV REFLECT_101
  i = jnp.mod(i, period)
  return jnp.where(i >= n, period - i, i)


def bilinear_sample(image: Array, ys: Array, xs: Array, *, mode: str) -> Array:
  """Samples ``image [H, W, C]`` at float coordinates ``ys, xs [H, W]`` (bilinear, reflected)."""
  h, w = image.shape[0], image.shape[1]
  y0 = jnp.floor(ys)
  x0 = jnp.floor(xs)
  fy = (ys - y0)[..., None]
  fx = (xs - x0)[..., None]
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  ya, yb = _reflect_index(y0, h, mode), _reflect_index(y0 + 1, h, mode)
  xa, xb = _reflect_index(x0, w, mode), _reflect_index(x0 + 1, w, mode)
  return ((1 - fy) * ((1 - fx) * image[ya, xa] + fx * image[ya, xb])
          + fy * ((1 - fx) * image[yb, xa] + fx * image[yb, xb]))


def _affine_from_points(src: Array, dst: Array) -> Array:
  """``[2, 3]`` affine ``A`` with ``A @ [src; 1] = dst`` for three points ``[3, 2]`` (x, y)."""
  m = jnp.concatenate([src, jnp.ones((3, 1), src.dtype)], axis=1)  # [3, 3]
  return jnp.linalg.solve(m, dst).T


def elastic_transform(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Random affine jitter, then a Gaussian-smoothed random displacement field.

  As the reference: three points around the centre (``side // 2 +- side // 3``) move by
  ``U(-jitter, jitter)``; the image is warped by that affine (bilinear, OpenCV's REFLECT_101
  border); then each pixel is displaced by ``alpha * G_sigma * U(-1, 1)`` per axis (scipy's
  ``gaussian_filter``, 'reflect' border, truncate 3) and resampled bilinearly (scipy's
  ``map_coordinates(order=1, mode='reflect')``). OpenCV's warp quantizes its bilinear weights
  to 1/32; we do not.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(alpha, sigma, jitter)`` as fractions of the image side (``min(H, W)``; the
      reference's tables are "x 32"). A traced ``sigma`` must be at most
      ``ELASTIC_SIGMA_BOUND``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  alpha, sigma, jitter = params
  n, h, w, _ = images.shape
  side = float(min(h, w))
  alpha_px = alpha * side
  sigma_px = sigma * side if _common.is_static(sigma) else jnp.asarray(sigma) * side
  jitter_px = jitter * side
  taps = _common.gaussian_taps_truncated(sigma_px, 3.0, ELASTIC_SIGMA_BOUND * side)
  cx, cy = float(w // 2), float(h // 2)
  sq = float(min(h, w) // 3)
  pts1 = jnp.asarray([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], jnp.float32)
  gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")

  keys = jax.random.split(key, n)

  def one(k, img):
    k1, k2 = jax.random.split(k)
    pts2 = pts1 + jax.random.uniform(k1, (3, 2), minval=-1.0, maxval=1.0) * jitter_px
    # warpAffine samples the source at M^-1 p, M the map from pts1 to pts2.
    inv = _affine_from_points(pts2, pts1)
    sx = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    sy = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    warped = bilinear_sample(img, sy, sx, mode="reflect")
    fields = jax.random.uniform(k2, (2, h, w), minval=-1.0, maxval=1.0)
    smooth = _common.separable_filter(fields, taps, taps, mode="symmetric") * alpha_px
    dx, dy = smooth[0], smooth[1]
    return bilinear_sample(warped, gy + dy, gx + dx, mode="symmetric")

  return jnp.clip(jax.vmap(one)(keys, images), 0.0, 1.0)
