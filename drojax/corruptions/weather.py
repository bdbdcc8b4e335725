"""Weather corruptions: snow, frost, fog and spatter.

Images are NHWC float32 in [0, 1]; every function is ``f(key, images, params)`` and returns the
image clipped to [0, 1]. Following ``make_cifar_c.py`` (hendrycks/robustness); our own code.
Randomness is drawn per example from ``key``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_unit_range
from drojax.corruptions import _common, _vision
from drojax.corruptions import textures as textures_lib
from drojax.corruptions.blur import motion_blur_angle, motion_taps

Array = jax.Array

SNOW_BLUR_RADIUS_BOUND = 16.0


# ----------------------------------------------------------------------------- fog


def plasma_fractal(key: Array, mapsize: int, decay: Any) -> Array:
  """Diamond-square height map ``[mapsize, mapsize]`` in [0, 1] (wrapping borders).

  As the reference (after FLHerne/mapgen): start from 0 at the corner; at each step size
  (``mapsize`` halving to 2) set square centres to the mean of their 4 corners and then diamond
  centres to the mean of their 4 neighbours (indices wrap), each plus ``wibble * U(-wibble,
  wibble)``; ``wibble`` starts at 100 and is divided by ``decay`` after each step; finally
  rescale to [0, 1]. ``mapsize`` must be a power of two (static).
  """
  if mapsize < 2 or mapsize & (mapsize - 1):
    raise ValueError(f"mapsize must be a power of two >= 2; got {mapsize}")
  # The known points at step size ``step`` form the grid g = m[::step, ::step]; each level
  # computes the square and diamond centres from g and interleaves the four grids (no scatter,
  # which compiles slowly on XLA:CPU).
  g = jnp.zeros((1, 1), jnp.float32)
  wibble = jnp.asarray(100.0, jnp.float32)
  decay = jnp.asarray(decay, jnp.float32)
  levels = int(math.log2(mapsize))
  # One draw for all levels (many small PRNG calls compile slowly): 3 n^2 values per level.
  total = sum(3 * 4 ** lv for lv in range(levels))
  draws = jax.random.uniform(key, (total,), minval=-1.0, maxval=1.0)
  offset = 0
  for level in range(levels):
    n = g.shape[0]
    parts = draws[offset:offset + 3 * n * n].reshape(3, n, n)
    offset += 3 * n * n
    scale = wibble ** 2

    def wibbled(total, part):
      return total / 4 + scale * part

    sq = g + jnp.roll(g, -1, axis=0)
    sq = wibbled(sq + jnp.roll(sq, -1, axis=1), parts[0])  # at [half::step, half::step]
    # at [0::step, half::step] and [half::step, 0::step]
    d1 = wibbled(sq + jnp.roll(sq, 1, axis=0) + g + jnp.roll(g, -1, axis=1), parts[1])
    d2 = wibbled(sq + jnp.roll(sq, 1, axis=1) + g + jnp.roll(g, -1, axis=0), parts[2])
    top = jnp.stack([g, d1], axis=-1).reshape(n, 2 * n)
    bottom = jnp.stack([d2, sq], axis=-1).reshape(n, 2 * n)
    g = jnp.stack([top, bottom], axis=1).reshape(2 * n, 2 * n)
    wibble = wibble / decay
  m = g
  m = m - jnp.min(m)
  return m / jnp.maximum(jnp.max(m), 1e-12)


def _mapsize(h: int, w: int) -> int:
  return max(2, 1 << (max(h, w) - 1).bit_length())


def fog(key: Array, images: Array, params: Sequence[Any]) -> Array:
  r"""Plasma-fractal fog: :math:`\mathrm{clip}((x + a P)\, m / (m + a))`, ``m = max(x)``.

  ``P`` is :func:`plasma_fractal` (one per example, cropped to the image), ``m`` the image's
  maximum over all pixels and channels.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(amplitude, decay)``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  amp, decay = params
  n, h, w, _ = images.shape
  size = _mapsize(h, w)
  keys = jax.random.split(key, n)
  plasma = jax.vmap(lambda k: plasma_fractal(k, size, decay)[:h, :w])(keys)
  mx = jnp.max(images, axis=(1, 2, 3), keepdims=True)
  x = images + amp * plasma[..., None]
  return jnp.clip(x * mx / (mx + amp), 0.0, 1.0)


# ----------------------------------------------------------------------------- snow


def snow(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Motion-blurred snow flakes over a brightened image, as the reference.

  Per example: a layer ``N(mean, std^2)`` of the image size, centre-zoomed by ``zoom``
  (``clipped_zoom``), zeroed below ``threshold``, clipped to [0, 1] and floored to 8 bits,
  motion-blurred with ImageMagick's kernel (``radius``, ``sigma``) at an angle uniform in
  [-135, -45) degrees. The image becomes ``blend * x + (1 - blend) * max(x, 1.5 * gray(x) +
  0.5)`` (gray = 0.299 R + 0.587 G + 0.114 B) and the layer plus its 180-degree rotation is
  added. The reference round-trips the blurred layer through an 8-bit PNG; we stay in float.

  Args:
    key: PRNG key.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(mean, std, zoom, threshold, radius, sigma, blend)``.

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].
  """
  mean, std, zoom, threshold, radius, sigma, blend = params
  n, h, w, _ = images.shape
  k1, k2 = jax.random.split(key)
  layer = mean + std * jax.random.normal(k1, (n, h, w))
  zh = _common.clipped_zoom_matrix(h, zoom)
  zw = _common.clipped_zoom_matrix(w, zoom)
  layer = jnp.einsum("ih,nhw,jw->nij", zh, layer, zw)
  layer = jnp.where(layer < threshold, 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0.0, 1.0) * 255.0) / 255.0
  taps = motion_taps(radius, sigma) if _common.is_static(radius) else None
  if taps is None:
    width = 2 * int(SNOW_BLUR_RADIUS_BOUND) + 1
    i = jnp.arange(width, dtype=jnp.float32)
    live = i < 2 * jnp.ceil(jnp.asarray(radius, jnp.float32)) + 1
    s = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
    taps = jnp.where(live, jnp.exp(-(i ** 2) / (2 * s ** 2)), 0.0)
    taps = taps / jnp.sum(taps)
  angles = jax.random.uniform(k2, (n,), minval=-135.0, maxval=-45.0)
  layer = motion_blur_angle(layer, taps, angles)[..., None]
  gray = (0.299 * images[..., 0] + 0.587 * images[..., 1] + 0.114 * images[..., 2])[..., None]
  x = blend * images + (1 - blend) * jnp.maximum(images, gray * 1.5 + 0.5)
  return jnp.clip(x + layer + jnp.flip(layer, axis=(1, 2)), 0.0, 1.0)


# ----------------------------------------------------------------------------- frost

# Procedural frost, calibrated against the reference maker's frost outputs on the first 200
# CIFAR-10 test images (docs/benchmarks.md, "Corruption fidelity"): per texture a tone from a
# small palette (k-means centres of the mean colours of reference crops, recovered by
# inverting the blend ``out = a x + b F``) with a random brightness shift, a low-frequency
# plasma haze, and a grain of heavy-tailed white noise plus lightly smoothed noise, shared by
# the channels (the reference's high frequencies are 96-99 % correlated across channels). The
# amplitudes match the mean, the contrast, the mean |Laplacian| and the radially averaged
# power spectrum of the reference's frost layer at every severity within 10 % (the top bands
# within ~16 %); they are not a model of the photographs.
_FROST_TONES = ((130, 148, 160), (74, 147, 164), (199, 204, 213), (99, 111, 123),
                (154, 167, 180))
_FROST_TONE_OFFSET = 0.05
_FROST_TONE_JITTER = 0.05
_FROST_HAZE = 0.13
_FROST_HAZE_DECAY = 2.0
_FROST_GRAIN = 0.07
_FROST_FLECKS = 0.04
_FROST_FLECK_SIGMA = 0.8
_FROST_COLOUR_GRAIN = 0.004


def procedural_frost(key: Array, h: int, w: int) -> Array:
  """One procedural frost texture ``[h, w, 3]`` in [0, 1] (not the reference photographs).

  The reference blends crops of frost photographs shipped with its repository; we cannot
  ship those. This texture is calibrated so that frost built from it has the statistics of
  the reference's frost (mean, contrast, mean |Laplacian| and radial power spectrum; see
  "Corruption fidelity" in ``docs/benchmarks.md``): a tone from a five-colour palette shifted by
  ``N(0.05, 0.05^2)``, plus a plasma-fractal haze (amplitude 0.13), Laplace white grain (std
  0.07), Gaussian-smoothed noise (sigma 0.8 px, std 0.04) and a faint per-channel grain,
  clipped to [0, 1]. Deterministic given ``key``; ``h`` and ``w`` are static. Pass your own
  textures to :func:`frost` for the photographic look.
  """
  kt, kh, kn = jax.random.split(key, 3)  # few random calls: each costs compile time
  noise = jax.random.normal(kn, (h * w * 8 + 1,))
  tones = jnp.asarray(_FROST_TONES, jnp.float32) / 255.0
  tone = tones[jax.random.randint(kt, (), 0, tones.shape[0])]
  tone = tone + _FROST_TONE_OFFSET + _FROST_TONE_JITTER * noise[-1]
  z = noise[:-1].reshape(h, w, 8)
  haze = plasma_fractal(kh, _mapsize(h, w), _FROST_HAZE_DECAY)[:h, :w]
  haze = haze - jnp.mean(haze)
  # z0 z1 + z2 z3 is Laplace(0, 1) (variance 2) for independent standard normals.
  grain = (z[..., 0] * z[..., 1] + z[..., 2] * z[..., 3]) / math.sqrt(2.0)
  flecks = _common.gaussian_filter(z[None, ..., 4], _FROST_FLECK_SIGMA, mode="symmetric",
                                   bound=3.0)[0]
  flecks = flecks / jnp.maximum(jnp.std(flecks), 1e-6)
  gray = _FROST_HAZE * haze + _FROST_GRAIN * grain + _FROST_FLECKS * flecks
  colour = _FROST_COLOUR_GRAIN * z[..., 5:]
  return jnp.clip(tone[None, None, :] + gray[..., None] + colour, 0.0, 1.0)


def frost(key: Array, images: Array, params: Sequence[Any], *,
          textures: Any = None) -> Array:
  r"""Frost on the lens: :math:`\mathrm{clip}(a\,x + b\,F)`.

  ``F`` is, per example, a random crop of a random texture from ``textures`` (the texture
  uniformly, then the crop's top-left corner uniformly in ``[0, Ht - H) x [0, Wt - W)`` as the
  reference's ``np.random.randint``; ``[0, 1)`` when a side equals the image's), or a
  :func:`procedural_frost` texture by default.

  Args:
    key: PRNG key.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(a, b)``: image weight, frost weight.
    textures: optional ``[T, Ht, Wt, 3]`` float in [0, 1] with ``Ht >= H`` and ``Wt >= W``, or
      a :class:`~drojax.corruptions.textures.FrostTextures` (textures of different sizes, as
      :func:`~drojax.corruptions.textures.load_frost_textures` returns them: the reference's
      photographs resized by 0.2 as it does).

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].
  """
  a, b = params
  n, h, w, _ = images.shape
  keys = jax.random.split(key, n)
  if textures is None:
    tex = jax.vmap(lambda k: procedural_frost(k, h, w))(keys)
  else:
    if isinstance(textures, textures_lib.FrostTextures):
      if isinstance(textures.sizes, np.ndarray) and (textures.sizes < [h, w]).any():
        raise ValueError(f"every frost texture must be at least as large as the images "
                         f"({h}x{w}); got sizes {textures.sizes.tolist()}")
      stack = jnp.asarray(textures.images, jnp.float32)
      sizes = jnp.asarray(textures.sizes, jnp.int32)
    else:
      stack = jnp.asarray(textures, jnp.float32)
      sizes = None
    if stack.ndim != 4 or stack.shape[-1] != 3:
      raise ValueError(f"textures must be [T, Ht, Wt, 3]; got shape {stack.shape}")
    t, th, tw, _ = stack.shape
    if sizes is None:
      sizes = jnp.broadcast_to(jnp.asarray([th, tw], jnp.int32), (t, 2))
    elif sizes.shape != (t, 2):
      raise ValueError(f"textures.sizes must be [T, 2] = [{t}, 2]; got {sizes.shape}")
    if th < h or tw < w:
      raise ValueError(f"textures must be at least as large as the images ({h}x{w}); "
                       f"got {th}x{tw}")
    check_unit_range("textures", stack)

    def crop(k):
      ki, ky, kx = jax.random.split(k, 3)
      i = jax.random.randint(ki, (), 0, t)
      y = jax.random.randint(ky, (), 0, jnp.maximum(sizes[i, 0] - h, 1))
      x = jax.random.randint(kx, (), 0, jnp.maximum(sizes[i, 1] - w, 1))
      return jax.lax.dynamic_slice(stack[i], (y, x, 0), (h, w, 3))

    tex = jax.vmap(crop)(keys)
  return jnp.clip(a * images + b * tex, 0.0, 1.0)


# ----------------------------------------------------------------------------- spatter

_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise, RGB
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)        # mud brown, RGB


def _water_mask(liquid: Array, intensity: Any) -> Array:
  """The reference's water mask ``[H, W]``: liquid times an embossed edge-distance map."""
  u8 = jnp.floor(jnp.clip(liquid, 0.0, 1.0) * 255.0)
  edges = _vision.canny(u8, 50.0, 150.0)
  dist = jnp.minimum(_vision.distance_to(edges), 20.0)  # THRESH_TRUNC at 20
  dist = jnp.floor(_vision.box_blur3(dist))              # .astype(np.uint8)
  dist = _vision.equalize_hist(dist)
  dist = _vision.emboss_u8(dist)
  dist = jnp.round(_vision.box_blur3(dist))              # blur of an 8-bit image stays 8-bit
  m = liquid * dist
  mx = jnp.max(m)
  return jnp.where(mx > 0, m / jnp.where(mx > 0, mx, 1.0), 0.0) * intensity


def spatter(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Water or mud spatter, as the reference.

  Per example a liquid layer ``N(loc, scale^2)`` is blurred (Gaussian ``sigma``) and zeroed
  below ``threshold``. Water (mode 0): edges of the 8-bit layer (Canny 50/150), distance to
  them truncated at 20, 3x3 mean, histogram equalization, an emboss filter and another 3x3
  mean give a map ``D``; ``m = intensity * L D / max(L D)`` and the image gets
  ``x + m * turquoise``. Mud (mode 1): the mask ``1[L > threshold]`` is blurred with sigma
  ``intensity`` (the reference reuses that parameter), zeroed below 0.8, and mud brown is
  painted with that alpha. A fractional mode (continuous severity) blends the two results.
  The reference's distance transform is OpenCV's 5x5 chamfer; ours is exact.

  Args:
    key: PRNG key.
    images: ``[N, H, W, 3]`` float32 in [0, 1].
    params: ``(loc, scale, sigma, threshold, intensity, mode)``.

  Returns:
    ``[N, H, W, 3]`` float32 in [0, 1].
  """
  loc, scale, sigma, threshold, intensity, mode = params
  n, h, w, _ = images.shape
  liquid = loc + scale * jax.random.normal(key, (n, h, w))
  liquid = _common.gaussian_filter(liquid, sigma, mode="edge", truncate=4.0, bound=3.0)
  liquid = jnp.where(liquid < threshold, 0.0, liquid)
  outs = []
  static_mode = float(mode) if _common.is_static(mode) else None
  if static_mode is None or static_mode < 1.0:
    m = jax.vmap(lambda l: _water_mask(l, intensity))(liquid)[..., None]
    outs.append(jnp.clip(images + m * jnp.asarray(_WATER, jnp.float32).reshape(1, 1, 1, 3),
                         0.0, 1.0))
  if static_mode is None or static_mode > 0.0:
    wet = (liquid > threshold).astype(jnp.float32)
    mm = _common.gaussian_filter(wet, intensity, mode="edge", truncate=4.0, bound=3.0)
    mm = jnp.where(mm < 0.8, 0.0, mm)[..., None]
    mud = jnp.asarray(_MUD, jnp.float32).reshape(1, 1, 1, 3)
    outs.append(jnp.clip(images * (1 - mm) + mud * mm, 0.0, 1.0))
  if len(outs) == 1:
    return outs[0]
  t = jnp.asarray(mode, jnp.float32)
  return (1 - t) * outs[0] + t * outs[1]
