"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur.

Images are NHWC float32 in [0, 1]; every function is ``f(key, images, params)`` and returns the
image clipped to [0, 1]. Following ``make_cifar_c.py`` (hendrycks/robustness) and, for the
swap-ratio glass blur, DRO-Augment's ``NewBench``; our own code. Parameters may be Python
numbers (static: filter sizes follow them exactly) or JAX scalars (traced: sizes follow the
``*_BOUND`` constants below, and larger values are not supported).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from drojax.corruptions import _common

Array = jax.Array

DEFOCUS_RADIUS_BOUND = 3.0   # disk radius for traced parameters (the tables reach 1.55)
GAUSSIAN_SIGMA_BOUND = 3.0
GLASS_ITERATIONS_BOUND = 3
MOTION_RADIUS_BOUND = 16.0
ZOOM_BOUND = 1.75


def gaussian_blur(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Per-channel Gaussian blur as scikit-image's ``gaussian`` ('nearest' border, truncate 4).

  Args:
    key: unused.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(sigma,)`` in pixels.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].

  >>> import jax.numpy as jnp
  >>> gaussian_blur(None, jnp.full((1, 8, 8, 3), .5), (1.0,)).shape
  (1, 8, 8, 3)
  """
  del key
  (sigma,) = params
  out = _common.gaussian_filter(images, sigma, mode="edge", truncate=4.0,
                                bound=GAUSSIAN_SIGMA_BOUND)
  return jnp.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- defocus


def defocus_kernel(radius: Any, alias_sigma: Any) -> Array:
  """The reference's anti-aliased disk: ``1[x^2 + y^2 <= r^2]`` normalized, then a 3x3 Gaussian.

  The 3x3 Gaussian is OpenCV's ``GaussianBlur(ksize=3, sigma)`` (taps ``exp(-x^2 / 2 sigma^2)``
  normalized); sigma 0 means no anti-aliasing here (OpenCV would derive sigma 0.8 from the
  kernel size). The kernel is cropped to its support, ``floor(r) + 1`` around the centre.
  """
  half = int(math.floor(_common.static_bound(radius, DEFOCUS_RADIUS_BOUND))) + 1
  grid = jnp.arange(-half - 1, half + 2, dtype=jnp.float32)
  yy, xx = jnp.meshgrid(grid, grid, indexing="ij")
  r = jnp.asarray(radius, jnp.float32)
  disk = (xx ** 2 + yy ** 2 <= r ** 2).astype(jnp.float32)
  disk = disk / jnp.sum(disk)
  taps = _common.gaussian_taps(alias_sigma, 1)
  padded = jnp.pad(disk, 1)
  n = disk.shape[0]
  rows = sum(taps[i] * padded[i:i + n, 1:1 + n] for i in range(3))
  rows = jnp.pad(rows, ((0, 0), (1, 1)))
  blurred = sum(taps[j] * rows[:, j:j + n] for j in range(3))
  return blurred[1:-1, 1:-1]


def defocus_blur(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Correlation with :func:`defocus_kernel` (OpenCV ``filter2D``, REFLECT_101 border).

  Args:
    key: unused.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(radius, alias_sigma)`` in pixels.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  del key
  radius, alias_sigma = params
  kernel = defocus_kernel(radius, alias_sigma)
  return jnp.clip(_common.filter2d(images, kernel, mode="reflect"), 0.0, 1.0)


# ----------------------------------------------------------------------------- glass


def _sequential_swaps(flat: Array, pos: Array, other: Array) -> Array:
  """Applies swaps ``flat[n, pos[t, n]] <-> flat[n, other[t, n]]`` for t = 0, 1, ... in order.

  ``flat``: ``[N, P, C]``; ``pos``, ``other``: ``[T, N]`` int32. A swap with itself is a no-op.
  """
  rows = jnp.arange(flat.shape[0])

  def body(t, img):
    p, q = pos[t], other[t]
    a = img[rows, p]
    b = img[rows, q]
    img = img.at[rows, p].set(b)
    return img.at[rows, q].set(a)

  return jax.lax.fori_loop(0, pos.shape[0], body, flat)


def _sequential_copies(flat: Array, pos: Array, other: Array) -> Array:
  """Applies ``flat[n, pos[t, n]] <- flat[n, other[t, n]]`` for t = 0, 1, ... in order."""
  rows = jnp.arange(flat.shape[0])

  def body(t, img):
    return img.at[rows, pos[t]].set(img[rows, other[t]])

  return jax.lax.fori_loop(0, pos.shape[0], body, flat)


def _quantize_floor(x: Array) -> Array:
  """``np.uint8(x * 255) / 255`` as the reference does between its two blurs."""
  return jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0


def glass_blur(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Gaussian blur, local pixel swaps, Gaussian blur again.

  With ``params = (sigma, max_shift, iterations)`` (the standard table) each of ``iterations``
  sweeps visits every pixel ``(h, w)``, ``h`` from ``H - d`` down to ``d + 1`` (``w`` likewise,
  bottom-right first), and draws ``dx, dy`` uniformly on ``{-d, ..., d - 1}`` (NumPy's
  exclusive upper bound). The reference writes this as a tuple "swap" of two NumPy row views,
  ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, which *copies* ``x[h', w']`` into ``x[h, w]``
  and leaves ``x[h', w']`` unchanged (the second assignment reads the already-overwritten view).
  We reproduce that behaviour, which is what the published CIFAR-10-C contains. For ``d = 1``
  every pixel read (up/left of the current one) has not been visited yet in the sweep, so the
  sequential sweep equals one vectorized gather ``x[h, w] <- x[h + dy, w + dx]`` — exact, not
  an approximation. Other ``d`` run the sequential copies in a ``fori_loop``.

  With ``params = (sigma, max_shift, iterations, swap_ratio)`` (the refined tables) each sweep
  makes ``int((H - 2d)(W - 2d) * swap_ratio)`` swaps of a uniformly drawn pixel in
  ``[d, H - d) x [d, W - d)`` with a neighbour offset uniformly in ``{-d, ..., d}^2``, in order
  (a true swap there: that source copies the pixel first). This is sequential; we run it in a
  ``fori_loop`` vectorized over the batch.

  A fractional ``iterations`` (continuous severity) makes a last, partial sweep in which each
  swap happens with probability equal to the fractional part (swap-ratio variant: that
  fraction of the swaps). Before the swaps the blurred image is floored to 8 bits, as the
  reference's ``np.uint8`` does. ``max_shift`` must be static (every table uses 1).

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(sigma, max_shift, iterations[, swap_ratio])``.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  sigma, d, iterations = params[:3]
  ratio = params[3] if len(params) == 4 else None
  d = int(d) if _common.is_static(d) else 1
  n, h, w, c = images.shape
  blur = lambda x: _common.gaussian_filter(x, sigma, mode="edge", truncate=4.0, bound=2.0)
  x = _quantize_floor(blur(images)).reshape(n, h * w, c)
  sweeps = (int(math.ceil(float(iterations))) if _common.is_static(iterations)
            else GLASS_ITERATIONS_BOUND)
  iters = jnp.asarray(iterations, jnp.float32)
  for k in range(sweeps):
    share = jnp.clip(iters - k, 0.0, 1.0)  # 1 for a full sweep, the fraction for a last one
    # fold_in, not split: sweep k draws the same numbers whatever the number of sweeps.
    ka, kb, kc = jax.random.split(jax.random.fold_in(key, k), 3)
    if ratio is None:
      hs = np.arange(h - d, d, -1)
      ws = np.arange(w - d, d, -1)
      pos = (hs[:, None] * w + ws[None, :]).reshape(-1)
      steps = pos.shape[0]
      dxy = jax.random.randint(ka, (2, steps, n), -d, d)
      live = jax.random.uniform(kb, (steps, n)) < share
      src = jnp.asarray(pos, jnp.int32)[:, None] + jnp.where(live, dxy[1] * w + dxy[0], 0)
      if d == 1:  # reads only unvisited pixels: one gather is the whole sweep
        index = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32), (n, h * w))
        index = index.at[:, pos].set(src.T)
        x = jnp.take_along_axis(x, index[:, :, None], axis=1)
      else:
        posb = jnp.broadcast_to(jnp.asarray(pos, jnp.int32)[:, None], (steps, n))
        x = _sequential_copies(x, posb, src)
    else:
      steps = (h - 2 * d) * (w - 2 * d)
      ph = jax.random.randint(ka, (steps, n), d, h - d)
      pw = jax.random.randint(kb, (steps, n), d, w - d)
      pos = ph * w + pw
      dxy = jax.random.randint(kc, (2, steps, n), -d, d + 1)
      count = jnp.floor(steps * jnp.asarray(ratio, jnp.float32) * share)
      live = jnp.arange(steps)[:, None] < count
      other = pos + jnp.where(live, dxy[1] * w + dxy[0], 0)
      x = _sequential_swaps(x, pos, other)
  out = blur(x.reshape(n, h, w, c))
  return jnp.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- motion


def motion_taps(radius: Any, sigma: Any) -> Array:
  """ImageMagick's one-sided motion kernel ``exp(-i^2 / 2 sigma^2)``, ``i < 2 ceil(r) + 1``,
  normalized."""
  width = 2 * int(math.ceil(_common.static_bound(radius, MOTION_RADIUS_BOUND))) + 1
  i = jnp.arange(width, dtype=jnp.float32)
  r = jnp.asarray(radius, jnp.float32)
  live = i < 2 * jnp.ceil(r) + 1
  s = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
  wts = jnp.where(live, jnp.exp(-(i ** 2) / (2 * s ** 2)), 0.0)
  return wts / jnp.sum(wts)


def motion_blur_angle(images: Array, taps: Array, angles: Array) -> Array:
  """Emulates ImageMagick's ``MotionBlurImage`` at ``angles [N]`` (degrees) with ``taps``.

  Output pixel ``(y, x)`` is ``sum_i taps[i] * image[y + dy_i, x + dx_i]`` with
  ``dx_i = ceil(i cos(a) - 1/2)``, ``dy_i = ceil(i sin(a) - 1/2)`` and edge replication
  (ImageMagick's default virtual pixels). Works on ``[N, H, W]`` or ``[N, H, W, C]``.
  """
  n, h, w = images.shape[:3]
  i = jnp.arange(taps.shape[0], dtype=jnp.float32)
  rad = jnp.deg2rad(angles.astype(jnp.float32))
  dx = jnp.ceil(i[None, :] * jnp.cos(rad)[:, None] - 0.5).astype(jnp.int32)  # [N, T]
  dy = jnp.ceil(i[None, :] * jnp.sin(rad)[:, None] - 0.5).astype(jnp.int32)
  ys = jnp.arange(h)
  xs = jnp.arange(w)

  def one(img, ddx, ddy):
    def tap(t):
      yy = jnp.clip(ys + ddy[t], 0, h - 1)
      xx = jnp.clip(xs + ddx[t], 0, w - 1)
      return img[yy][:, xx]
    return sum(taps[t] * tap(t) for t in range(taps.shape[0]))

  return jax.vmap(one)(images, dx, dy)


def motion_blur(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Motion blur at a random angle in [-45, 45) degrees per example (ImageMagick's kernel).

  The reference round-trips through an 8-bit PNG; we stay in float.

  Args:
    key: PRNG key.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(radius, sigma)``; radius 0 means no blur.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  radius, sigma = params
  angles = jax.random.uniform(key, (images.shape[0],), minval=-45.0, maxval=45.0)
  out = motion_blur_angle(images, motion_taps(radius, sigma), angles)
  return jnp.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- zoom


def zoom_factors(max_zoom: float) -> np.ndarray:
  """The reference's ``np.arange(1, max_zoom, 0.01)`` (for a static ``max_zoom``)."""
  return np.arange(1.0, float(max_zoom), 0.01)


def zoom_blur(key: Array, images: Array, params: Sequence[Any]) -> Array:
  """Average of the image and its centre zooms by ``1, 1.01, ...`` up to ``max_zoom``.

  Each zoom is the reference's ``clipped_zoom`` (see
  :func:`drojax.corruptions._common.clipped_zoom_matrix`); the factors are
  ``np.arange(1, max_zoom, 0.01)`` exactly as the reference, so e.g. 1.06 gives 7 factors.
  A traced ``max_zoom`` (at most ``ZOOM_BOUND``) uses ``ceil((max_zoom - 1) / 0.01)``
  factors, which can differ by one from NumPy's float64 count at exact hundredths.

  Args:
    key: unused.
    images: ``[N, H, W, C]`` float32 in [0, 1].
    params: ``(max_zoom,)``, at least 1.

  Returns:
    ``[N, H, W, C]`` float32 in [0, 1].
  """
  del key
  (max_zoom,) = params
  h, w = images.shape[1], images.shape[2]
  if _common.is_static(max_zoom):
    factors = zoom_factors(max_zoom)
    weights = jnp.ones((len(factors),), jnp.float32)
  else:
    factors = 1.0 + 0.01 * np.arange(int(round((ZOOM_BOUND - 1) / 0.01)))
    count = jnp.ceil((jnp.asarray(max_zoom, jnp.float32) - 1.0) / 0.01 - 1e-3)
    weights = (jnp.arange(len(factors)) < count).astype(jnp.float32)
  if len(factors) == 0:
    return images
  mh = jnp.stack([_common.clipped_zoom_matrix(h, float(z)) for z in factors])
  mw = jnp.stack([_common.clipped_zoom_matrix(w, float(z)) for z in factors])
  mh = mh * weights[:, None, None]
  zoomed = jnp.einsum("kih,nhwc,kjw->nijc", mh, images, mw)
  out = (images + zoomed) / (1.0 + jnp.sum(weights))
  return jnp.clip(out, 0.0, 1.0)
