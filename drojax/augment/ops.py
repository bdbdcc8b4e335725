"""The AugMix image operations, matching PIL's semantics, as pure JAX functions.

Images are float32 in [0, 1] inside the library. Every op here takes ONE image ``[H, W, C]``
and an explicit magnitude in PIL's units, and is deterministic; ``jax.vmap`` maps it over a
batch (magnitudes may be traced arrays). Random sampling of ops and magnitudes lives in
``drojax.augment.augmix``.

PIL works on uint8 images. To reproduce it, each op first quantizes its input to the 256-level
grid (``round(255 * x)``), computes on levels ``0..255`` with PIL's integer rounding rules, and
returns levels divided by 255; an image that came from uint8 therefore goes through an op
exactly as through PIL. What each op emulates (checked against Pillow 13 in
``tests/test_augment_ops.py``):

* Point ops are 256-entry lookup tables per channel, like ``Image.point``: ``posterize``
  (``ImageOps.posterize``: keep the top ``bits`` bits), ``solarize`` (invert levels
  ``>= threshold``), ``autocontrast`` (``ImageOps.autocontrast`` with no cutoff: per channel,
  map ``[lo, hi]`` to ``[0, 255]``, truncating), ``equalize`` (``ImageOps.equalize``: per
  channel, ``lut[i] = (step // 2 + #{pixels < i}) // step`` with
  ``step = (N - count(max level)) // 255``).
* Affine ops resample through ``Image.transform(..., Image.AFFINE, coeffs)``: the output pixel
  ``(x, y)`` reads the input at ``(a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f)``;
  samples that fall outside the image get ``fill``. ``"bilinear"`` (what google-research/augmix
  ``augmentations.py`` passes, with zero fill) clamps the 2x2 neighbourhood at the borders and
  truncates to uint8 like PIL's ``bilinear_filter``; ``"nearest"`` takes the pixel containing
  the sample. ``rotate`` uses ``Image.rotate``'s matrix (counter-clockwise degrees about the
  centre ``(W / 2, H / 2)``).
* Enhance ops are ``ImageEnhance``'s ``Image.blend(degenerate, image, factor)``, i.e.
  ``trunc(deg + factor * (image - deg))`` clipped to ``[0, 255]``, with ``degenerate`` the
  ITU-R 601 luma ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`` (``color``), a constant image
  at ``int(mean(L) + 0.5)`` (``contrast``), zeros (``brightness``), or PIL's 3x3 ``SMOOTH``
  filter (kernel ``[[1,1,1],[1,5,1],[1,1,1]] / 13``, rounded, border pixels kept; ``sharpness``).

The ``*_lut``, ``*_matrix``, ``warp_levels``, ``apply_lut`` and ``enhance_levels`` helpers are
the building blocks ``augmix`` batches: all point ops become one table lookup and all affine ops
one parametrized warp.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from drojax._checks import check_unit_range

_RESAMPLE = ("bilinear", "nearest")


# ----------------------------------------------------------------------------- quantization

def to_levels(image: jax.Array) -> jax.Array:
  """``[..]`` float image in [0, 1] -> float32 levels ``round(255 x)`` in ``{0, ..., 255}``."""
  return jnp.round(jnp.clip(image.astype(jnp.float32), 0.0, 1.0) * 255.0)


def from_levels(levels: jax.Array, *, dtype=jnp.float32) -> jax.Array:
  """Float levels in [0, 255] -> image in [0, 1] of ``dtype``."""
  return (levels / 255.0).astype(dtype)


def _check_image(image: jax.Array) -> None:
  if image.ndim != 3:
    raise ValueError(
        f"image must be one HWC image [H, W, C]; received shape {tuple(image.shape)}. "
        "Map over a batch with jax.vmap.")
  if not jnp.issubdtype(image.dtype, jnp.floating):
    raise TypeError(
        f"image must be floating point in [0, 1]; received dtype {image.dtype}. "
        "Convert uint8 with image.astype(jnp.float32) / 255.")
  check_unit_range("image", image)


def _check_resample(resample: str) -> None:
  if resample not in _RESAMPLE:
    raise ValueError(f"resample must be one of {_RESAMPLE}; received {resample!r}.")


# ----------------------------------------------------------------------------- lookup tables

def _levels() -> jax.Array:
  """``[256]`` float32 ``0..255``, built at call time (no JAX work at import: multi-host
  start-up)."""
  return jnp.arange(256, dtype=jnp.float32)


def posterize_lut(bits: jax.Array) -> jax.Array:
  """``[256]`` table keeping the top ``bits`` (1..8) bits of each level: ``i & ~(2^(8-bits)-1)``."""
  step = jnp.exp2(8.0 - jnp.asarray(bits, jnp.float32))
  return jnp.floor(_levels() / step) * step


def solarize_lut(threshold: jax.Array) -> jax.Array:
  """``[256]`` table inverting levels at or above ``threshold`` (0..256): ``255 - i``."""
  levels = _levels()
  return jnp.where(levels < jnp.asarray(threshold, jnp.float32), levels, 255.0 - levels)


def autocontrast_lut(levels: jax.Array) -> jax.Array:
  """``[C, 256]`` tables stretching each channel's ``[min, max]`` of ``levels [H, W, C]`` to 0..255.

  ``lut[i] = clip(floor(255 (i - lo) / (hi - lo)), 0, 255)``, identity when ``hi == lo``.
  """
  lo = jnp.min(levels, axis=(0, 1))[:, None]
  hi = jnp.max(levels, axis=(0, 1))[:, None]
  span = jnp.where(hi > lo, hi - lo, 1.0)
  # (i - lo) * 255 and hi - lo are exact small integers, so the float32 quotient floors exactly.
  stretched = jnp.clip(jnp.floor((_levels()[None, :] - lo) * 255.0 / span), 0.0, 255.0)
  return jnp.where(hi > lo, stretched, _levels()[None, :])


def equalize_lut(levels: jax.Array) -> jax.Array:
  """``[C, 256]`` histogram-equalization tables of ``levels [H, W, C]`` (``ImageOps.equalize``)."""
  h, w, c = levels.shape
  idx = levels.astype(jnp.int32).reshape(h * w, c)
  hist = jnp.zeros((c, 256), jnp.int32).at[jnp.arange(c)[None, :], idx].add(1)  # [C, 256]
  below = jnp.cumsum(hist, axis=1) - hist  # #{pixels < i}
  top = jnp.max(idx, axis=0)  # [C] highest level present
  count_top = jnp.take_along_axis(hist, top[:, None], axis=1)  # [C, 1]
  step = (h * w - count_top) // 255
  safe = jnp.maximum(step, 1)
  lut = jnp.minimum((safe // 2 + below) // safe, 255).astype(jnp.float32)
  return jnp.where(step > 0, lut, _levels()[None, :])


def apply_lut(levels: jax.Array, lut: jax.Array) -> jax.Array:
  """Maps integer-valued ``levels [H, W, C]`` through ``lut`` (``[256]`` or ``[C, 256]``)."""
  c = levels.shape[-1]
  lut = jnp.broadcast_to(lut, (c, 256))
  offsets = 256 * jnp.arange(c, dtype=jnp.int32).reshape((1,) * (levels.ndim - 1) + (c,))
  idx = levels.astype(jnp.int32) + offsets
  return lut.reshape(-1)[idx]


# ----------------------------------------------------------------------------- affine warps

def identity_matrix() -> jax.Array:
  """PIL affine coefficients ``(a, b, c, d, e, f)`` of the identity, ``[6]`` float32."""
  return jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], jnp.float32)


def rotate_matrix(degrees: jax.Array, height: int, width: int) -> jax.Array:
  """``[6]`` output-to-input coefficients of ``Image.rotate(degrees)`` (counter-clockwise)."""
  theta = -jnp.asarray(degrees, jnp.float32) * (math.pi / 180.0)
  a, b = jnp.cos(theta), jnp.sin(theta)
  d, e = -jnp.sin(theta), jnp.cos(theta)
  cx, cy = width / 2.0, height / 2.0
  c = a * -cx + b * -cy + cx
  f = d * -cx + e * -cy + cy
  return _coeffs(a, b, c, d, e, f)


def _coeffs(*values) -> jax.Array:
  values = [jnp.asarray(v, jnp.float32) for v in values]
  shape = jnp.broadcast_shapes(*(v.shape for v in values))
  return jnp.stack([jnp.broadcast_to(v, shape) for v in values], axis=-1)


def shear_x_matrix(factor: jax.Array) -> jax.Array:
  """``[6]`` coefficients ``(1, factor, 0, 0, 1, 0)``: input x = x + factor * y."""
  return _coeffs(1.0, factor, 0.0, 0.0, 1.0, 0.0)


def shear_y_matrix(factor: jax.Array) -> jax.Array:
  """``[6]`` coefficients ``(1, 0, 0, factor, 1, 0)``: input y = y + factor * x."""
  return _coeffs(1.0, 0.0, 0.0, factor, 1.0, 0.0)


def translate_x_matrix(pixels: jax.Array) -> jax.Array:
  """``[6]`` coefficients ``(1, 0, pixels, 0, 1, 0)``: the content moves left by ``pixels``."""
  return _coeffs(1.0, 0.0, pixels, 0.0, 1.0, 0.0)


def translate_y_matrix(pixels: jax.Array) -> jax.Array:
  """``[6]`` coefficients ``(1, 0, 0, 0, 1, pixels)``: the content moves up by ``pixels``."""
  return _coeffs(1.0, 0.0, 0.0, 0.0, 1.0, pixels)



def sample_pil(gather: Callable[[jax.Array, jax.Array], jax.Array], u: jax.Array, v: jax.Array,
               h: int, w: int, *, resample: str,
               first_tap: Callable[[jax.Array, jax.Array], jax.Array] | None = None
               ) -> jax.Array:
  """PIL's nearest or bilinear sample at input coordinates ``(u, v)`` (pixel centres at +0.5).

  Args:
    gather: ``gather(yy, xx) -> [..., C]`` reads the image at integer rows/columns.
    u, v: ``[...]`` input x and y coordinates of every output pixel.
    h, w: static image height and width (taps are clamped to the image).
    resample: static, ``"nearest"`` or ``"bilinear"`` (truncated to an integer level, as PIL).
    first_tap: reads the top-left tap instead of ``gather`` (``augmix`` applies its lookup
      table there alone); defaults to ``gather``.

  Returns:
    ``[..., C]`` float32 levels (the caller masks pixels that fall outside the image).
  """
  first_tap = gather if first_tap is None else first_tap
  if resample == "nearest":
    return first_tap(jnp.clip(jnp.floor(v), 0, h - 1).astype(jnp.int32),
                     jnp.clip(jnp.floor(u), 0, w - 1).astype(jnp.int32))
  u = u - 0.5
  v = v - 0.5
  x0 = jnp.floor(u)
  y0 = jnp.floor(v)
  dx = (u - x0)[..., None]
  dy = (v - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)
  xa = jnp.clip(x0, 0, w - 1)
  xb = jnp.clip(x0 + 1, 0, w - 1)
  ya = jnp.clip(y0, 0, h - 1)
  yb = jnp.clip(y0 + 1, 0, h - 1)
  top_a = first_tap(ya, xa)
  row1 = top_a + (gather(ya, xb) - top_a) * dx
  bot_a = gather(yb, xa)
  row2 = bot_a + (gather(yb, xb) - bot_a) * dx
  # PIL uses the first row again when the second falls below the image.
  row2 = jnp.where(((y0 + 1) < h)[..., None], row2, row1)
  return jnp.floor(row1 + (row2 - row1) * dy)


def warp_levels(levels: jax.Array, coeffs: jax.Array, *, fill: float | jax.Array = 0.0,
                resample: str = "bilinear", lut: jax.Array | None = None) -> jax.Array:
  """Resamples ``levels [H, W, C]`` through PIL affine ``coeffs [6]`` (output -> input).

  Args:
    levels: float levels on the 0..255 grid.
    coeffs: ``(a, b, c, d, e, f)``; output pixel ``(x, y)`` samples the input at
      ``(a (x + .5) + b (y + .5) + c, d (x + .5) + e (y + .5) + f)``.
    fill: level (0..255) written where the sample falls outside the image.
    resample: static, ``"bilinear"`` (PIL ``BILINEAR``, result truncated to an integer level)
      or ``"nearest"``.
    lut: optional ``[C, 256]`` table applied to every sampled input pixel before
      interpolating. With the identity matrix this is exactly ``apply_lut(levels, lut)``; with
      an identity table it is the plain warp. ``augmix`` uses it to run a point op and a warp
      as one gather pass (gathering from a gathered image makes XLA recompute the inner gather
      per tap).

  Returns:
    ``[H, W, C]`` float32 levels. The identity matrix returns ``levels`` exactly.
  """
  _check_resample(resample)
  h, w, c = levels.shape
  ys = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5
  xs = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5
  u = coeffs[0] * xs + coeffs[1] * ys + coeffs[2]  # [H, W] input x
  v = coeffs[3] * xs + coeffs[4] * ys + coeffs[5]  # [H, W] input y
  inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
  flat = levels.reshape(h * w, c)
  if lut is not None:
    lut_flat = jnp.broadcast_to(lut, (c, 256)).reshape(-1)
    lut_offsets = 256 * jnp.arange(c, dtype=jnp.int32)[None, :]

  def gather(yy, xx):
    taps = flat[(yy * w + xx).reshape(-1)]  # [H * W, C]
    if lut is not None:
      taps = lut_flat[taps.astype(jnp.int32) + lut_offsets]
    return taps.reshape(h, w, c)

  out = sample_pil(gather, u, v, h, w, resample=resample)
  fill = jnp.asarray(fill, jnp.float32)
  return jnp.where(inside[..., None], out, fill)


# ----------------------------------------------------------------------------- enhance

def luma_levels(levels: jax.Array) -> jax.Array:
  """``[H, W]`` PIL ``convert("L")`` of RGB levels ``[H, W, 3]`` (``[H, W]`` copy for C == 1)."""
  if levels.shape[-1] == 1:
    return levels[..., 0]
  q = levels.astype(jnp.int32)
  lum = (q[..., 0] * 19595 + q[..., 1] * 38470 + q[..., 2] * 7471 + 0x8000) >> 16
  return lum.astype(jnp.float32)


def smooth_levels(levels: jax.Array) -> jax.Array:
  """PIL ``ImageFilter.SMOOTH`` on ``[H, W, C]`` levels: rounded 3x3 filter, borders kept."""
  h, w, _ = levels.shape
  p = levels
  s = (p[:-2, :-2] + p[:-2, 1:-1] + p[:-2, 2:] + p[1:-1, :-2] + 5.0 * p[1:-1, 1:-1]
       + p[1:-1, 2:] + p[2:, :-2] + p[2:, 1:-1] + p[2:, 2:])
  # floor(s / 13 + 1/2) computed exactly on integers; 2s + 13 is odd, so there are no ties.
  inner = jnp.floor((2.0 * s + 13.0) / 26.0)
  return levels.at[1:h - 1, 1:w - 1].set(inner)


def enhance_levels(degenerate: jax.Array, levels: jax.Array, factor: jax.Array) -> jax.Array:
  """PIL ``Image.blend(degenerate, image, factor)`` on levels: ``clip(trunc(d + f (x - d)))``."""
  factor = jnp.asarray(factor, jnp.float32)
  return jnp.clip(jnp.floor(degenerate + factor * (levels - degenerate)), 0.0, 255.0)


def color_degenerate(levels: jax.Array) -> jax.Array:
  """``ImageEnhance.Color``'s degenerate image: the luma repeated over the channels."""
  return jnp.broadcast_to(luma_levels(levels)[..., None], levels.shape)


def contrast_degenerate(levels: jax.Array) -> jax.Array:
  """``ImageEnhance.Contrast``'s degenerate image: constant ``int(mean(L) + 0.5)``."""
  mean = jnp.floor(jnp.mean(luma_levels(levels)) + 0.5)
  return jnp.broadcast_to(mean, levels.shape)


# ----------------------------------------------------------------------------- public ops

def _point(image: jax.Array, lut_fn) -> jax.Array:
  _check_image(image)
  levels = to_levels(image)
  return from_levels(apply_lut(levels, lut_fn(levels)), dtype=image.dtype)


def _affine(image: jax.Array, coeffs: jax.Array, fill: float, resample: str) -> jax.Array:
  _check_image(image)
  levels = warp_levels(to_levels(image), coeffs, fill=jnp.round(jnp.asarray(fill) * 255.0),
                       resample=resample)
  return from_levels(levels, dtype=image.dtype)


def _enhance(image: jax.Array, degenerate_fn, factor: jax.Array) -> jax.Array:
  _check_image(image)
  levels = to_levels(image)
  return from_levels(enhance_levels(degenerate_fn(levels), levels, factor), dtype=image.dtype)


def autocontrast(image: jax.Array) -> jax.Array:
  """``ImageOps.autocontrast(image)``: stretches each channel to the full range.

  Args:
    image: ``[H, W, C]`` float in [0, 1].

  Returns:
    ``[H, W, C]`` on the 1/255 grid, same dtype.

  Example:
    >>> x = jnp.array([[[0.2], [0.6]]])
    >>> autocontrast(x)[..., 0].tolist()
    [[0.0, 1.0]]
  """
  return _point(image, autocontrast_lut)


def equalize(image: jax.Array) -> jax.Array:
  """``ImageOps.equalize(image)``: per-channel histogram equalization.

  Example:
    >>> x = jnp.array([[[0.0], [0.5]], [[0.5], [1.0]]])
    >>> equalize(x).shape
    (2, 2, 1)
  """
  return _point(image, equalize_lut)


def posterize(image: jax.Array, bits: jax.Array) -> jax.Array:
  """``ImageOps.posterize(image, bits)``: keeps the top ``bits`` (1..8) bits of each level.

  Example:
    >>> float(posterize(jnp.full((1, 1, 1), 200 / 255), 2)[0, 0, 0] * 255)
    192.0
  """
  return _point(image, lambda _: posterize_lut(bits))


def solarize(image: jax.Array, threshold: jax.Array) -> jax.Array:
  """``ImageOps.solarize(image, threshold)``: levels ``>= threshold`` (0..256) become ``255 - i``.

  Example:
    >>> float(solarize(jnp.full((1, 1, 1), 200 / 255), 128)[0, 0, 0] * 255)
    55.0
  """
  return _point(image, lambda _: solarize_lut(threshold))


def rotate(image: jax.Array, degrees: jax.Array, *, fill: float = 0.0,
           resample: str = "bilinear") -> jax.Array:
  """``image.rotate(degrees, resample=BILINEAR)``: counter-clockwise about the centre.

  Args:
    image: ``[H, W, C]`` float in [0, 1].
    degrees: angle in degrees (a traced scalar is fine).
    fill: value in [0, 1] for pixels rotated in from outside (PIL's default 0).
    resample: static, ``"bilinear"`` (AugMix's reference) or ``"nearest"``.

  Example:
    >>> x = jnp.ones((4, 4, 3))
    >>> bool(jnp.all(rotate(x, 0.0) == x))
    True
  """
  h, w = image.shape[0], image.shape[1]
  return _affine(image, rotate_matrix(degrees, h, w), fill, resample)


def shear_x(image: jax.Array, factor: jax.Array, *, fill: float = 0.0,
            resample: str = "bilinear") -> jax.Array:
  """``image.transform(size, AFFINE, (1, factor, 0, 0, 1, 0), resample)``.

  Example:
    >>> shear_x(jnp.ones((4, 4, 3)), 0.1).shape
    (4, 4, 3)
  """
  return _affine(image, shear_x_matrix(factor), fill, resample)


def shear_y(image: jax.Array, factor: jax.Array, *, fill: float = 0.0,
            resample: str = "bilinear") -> jax.Array:
  """``image.transform(size, AFFINE, (1, 0, 0, factor, 1, 0), resample)``.

  Example:
    >>> shear_y(jnp.ones((4, 4, 3)), -0.1).shape
    (4, 4, 3)
  """
  return _affine(image, shear_y_matrix(factor), fill, resample)


def translate_x(image: jax.Array, pixels: jax.Array, *, fill: float = 0.0,
                resample: str = "bilinear") -> jax.Array:
  """``image.transform(size, AFFINE, (1, 0, pixels, 0, 1, 0), resample)``.

  Example:
    >>> x = jnp.arange(4.0).reshape(1, 4, 1) / 3
    >>> (translate_x(x, 1)[0, :, 0] * 3).round().tolist()
    [1.0, 2.0, 3.0, 0.0]
  """
  return _affine(image, translate_x_matrix(pixels), fill, resample)


def translate_y(image: jax.Array, pixels: jax.Array, *, fill: float = 0.0,
                resample: str = "bilinear") -> jax.Array:
  """``image.transform(size, AFFINE, (1, 0, 0, 0, 1, pixels), resample)``.

  Example:
    >>> translate_y(jnp.ones((4, 4, 3)), -2).shape
    (4, 4, 3)
  """
  return _affine(image, translate_y_matrix(pixels), fill, resample)


def color(image: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Color(image).enhance(factor)``: 0 gives grey, 1 the image.

  Example:
    >>> x = jnp.array([[[1.0, 0.0, 0.0]]])
    >>> (color(x, 0.0) * 255).round().tolist()
    [[[76.0, 76.0, 76.0]]]
  """
  return _enhance(image, color_degenerate, factor)


def contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Contrast(image).enhance(factor)``: blends with the mean grey level.

  Example:
    >>> contrast(jnp.ones((2, 2, 3)), 0.5).shape
    (2, 2, 3)
  """
  return _enhance(image, contrast_degenerate, factor)


def brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Brightness(image).enhance(factor)``: ``trunc(factor * level)``, clipped.

  Example:
    >>> float(brightness(jnp.full((1, 1, 1), 101 / 255), 0.5)[0, 0, 0] * 255)
    50.0
  """
  return _enhance(image, jnp.zeros_like, factor)


def sharpness(image: jax.Array, factor: jax.Array) -> jax.Array:
  """``ImageEnhance.Sharpness(image).enhance(factor)``: blends with PIL's ``SMOOTH`` filter.

  Example:
    >>> sharpness(jnp.ones((4, 4, 3)), 2.0).shape
    (4, 4, 3)
  """
  return _enhance(image, smooth_levels, factor)
