"""AugMix (Hendrycks et al., 2020) on device: per-example op chains mixed with Dirichlet weights.

Images are NHWC float32 in [0, 1] inside the library. For each example, independently:

* ``width`` chains; chain ``j`` applies ``depth_j`` ops (``depth``, or uniform in {1, 2, 3}
  when ``depth = -1``), each op drawn uniformly from the 9 AugMix ops (13 with ``all_ops``) with
  a level ``l ~ U(0.1, severity)`` turned into PIL units the way google-research/augmix's
  ``augmentations.py`` does (``int_parameter(l, M) = int(l M / 10)``,
  ``float_parameter(l, M) = l M / 10``): posterize ``bits = 4 - int_parameter(l, 4)``,
  rotate ``int_parameter(l, 30)`` degrees, solarize ``threshold = 256 - int_parameter(l, 256)``,
  shear ``float_parameter(l, 0.3)``, translate ``int_parameter(l, W / 3)`` pixels (``H / 3``
  vertically), color/contrast/brightness/sharpness ``float_parameter(l, 1.8) + 0.1``; rotate,
  shear and translate flip their sign with probability 1/2.
* chain weights ``w ~ Dirichlet(alpha 1_width)``, skip weight ``m ~ Beta(alpha, alpha)``;
  ``augmix(x) = (1 - m) x + m sum_j w_j chain_j(x)``.

Each op emulates PIL on the 256-level grid (see ``drojax.augment.ops``); chains are quantized
after every op like the reference's uint8 PIL images, the final mix is not.

Speed: ``vmap`` of a ``lax.switch`` over 9-13 ops would evaluate every branch for every
example. Instead one chain step costs the same whatever the op (``apply_ops``): the point ops
are one lookup table (identity for the others), the affine ops one parametrized warp (rotate,
shear and translate are all ``Image.transform(AFFINE)``; the identity matrix for the others),
run together as one gather pass, plus, with ``all_ops``, one blend against a selected
degenerate image. All ``B * width`` chains of a batch go through a step together with flat
1-D gathers and scatters; steps beyond a chain's depth are identities.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from drojax._checks import check_hyper, check_static_int, check_unit_range
from drojax.augment import _random, ops

AUGMIX_OPS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x",
              "shear_y", "translate_x", "translate_y")
ALL_OPS = AUGMIX_OPS + ("color", "contrast", "brightness", "sharpness")
IDENTITY_OP = -1
_OP = {name: i for i, name in enumerate(ALL_OPS)}
_MAX_DEPTH = 3  # depth = -1 draws from {1, 2, 3}


class AugMixParams(NamedTuple):
  """Random choices of AugMix for a batch of ``B`` examples (row ``i`` is example ``i``'s).

  Attributes:
    weights: ``[B, width]`` float32 Dirichlet chain weights (rows sum to 1).
    skip: ``[B]`` float32 Beta weight ``m`` of the chain mixture (``1 - m`` of the clean image).
    ops: ``[B, width, D]`` int32 op indices into ``ALL_OPS``; ``IDENTITY_OP`` past a chain's
      depth.
    levels: ``[B, width, D]`` float32 levels ``U(0.1, severity)``.
    signs: ``[B, width, D]`` float32 +-1 for the signed ops (rotate, shear, translate).
  """

  weights: jax.Array
  skip: jax.Array
  ops: jax.Array
  levels: jax.Array
  signs: jax.Array


def _check_config(width, depth, severity, alpha):
  check_static_int("width", width, minimum=1)
  if (isinstance(depth, bool) or not isinstance(depth, (int, np.integer))
      or not (depth == -1 or depth >= 1)):
    raise ValueError(f"depth must be -1 (random 1..3) or an int >= 1; received {depth!r}.")
  check_hyper("severity", severity, low=0.0, low_open=True, high=10.0, expected="in (0, 10]")
  check_hyper("alpha", alpha, low=0.0, low_open=True, expected="> 0 and finite")


def sample_augmix_params(key: jax.Array, batch_size: int, *, width: int = 3, depth: int = -1,
                         severity: float = 3.0, alpha: float = 1.0,
                         all_ops: bool = False) -> AugMixParams:
  """Draws every example's AugMix choices independently, the way google-research/augmix does.

  Args:
    key: PRNG key.
    batch_size: static number of examples ``B``.
    width: static number of chains.
    depth: static chain depth, or -1 for a uniform draw from {1, 2, 3} per chain.
    severity: levels are drawn from ``U(0.1, severity)``.
    alpha: Dirichlet and Beta concentration.
    all_ops: static; also draw color, contrast, brightness and sharpness.

  Returns:
    ``AugMixParams`` with a leading batch axis ``B`` and ``D = depth`` (3 when ``depth = -1``).

  Example:
    >>> p = sample_augmix_params(jax.random.key(0), 4)
    >>> p.ops.shape, p.weights.shape
    ((4, 3, 3), (4, 3))
  """
  _check_config(width, depth, severity, alpha)
  b = batch_size
  k_w, k_m, k_depth, k_op, k_level, k_sign = jax.random.split(key, 6)
  max_depth = depth if depth > 0 else _MAX_DEPTH
  weights = _random.dirichlet(k_w, alpha, width, (b,))
  skip = _random.beta(k_m, alpha, alpha, (b,))
  if depth > 0:
    depths = jnp.full((b, width), depth, jnp.int32)
  else:
    depths = jax.random.randint(k_depth, (b, width), 1, _MAX_DEPTH + 1, dtype=jnp.int32)
  n_ops = len(ALL_OPS) if all_ops else len(AUGMIX_OPS)
  op = jax.random.randint(k_op, (b, width, max_depth), 0, n_ops, dtype=jnp.int32)
  op = jnp.where(jnp.arange(max_depth)[None, None, :] < depths[..., None], op, IDENTITY_OP)
  levels = jax.random.uniform(k_level, (b, width, max_depth), jnp.float32, 0.1, severity)
  signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (b, width, max_depth)), -1.0, 1.0)
  return AugMixParams(weights, skip, op, levels, signs.astype(jnp.float32))


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C]; received shape {tuple(images.shape)}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images must be floating point in [0, 1]; received dtype {images.dtype}. "
                    "Convert uint8 with images.astype(jnp.float32) / 255.")
  check_unit_range("images", images)


def op_magnitudes(level: jax.Array, sign: jax.Array, height: int, width: int) -> dict:
  """PIL-unit magnitudes of every op for one level and sign (AugMix's parameter rules)."""
  int_param = lambda maxval: jnp.trunc(level * maxval / 10.0)  # noqa: E731
  return dict(
      posterize=4.0 - int_param(4.0),
      rotate=int_param(30.0) * sign,
      solarize=256.0 - int_param(256.0),
      shear=level * 0.3 / 10.0 * sign,
      translate_x=int_param(width / 3.0) * sign,
      translate_y=int_param(height / 3.0) * sign,
      factor=level * 1.8 / 10.0 + 0.1,
  )


def _histograms(levels: jax.Array) -> jax.Array:
  """Per-image, per-channel 256-bin histograms ``[M, C, 256]`` of ``levels [M, H, W, C]``.

  One flat 1-D scatter: the vmapped per-image scatter built a 4-column index array that cost
  XLA:CPU more than the histogram itself.
  """
  m, _, _, c = levels.shape
  q = levels.astype(jnp.int32)
  row = (jnp.arange(m, dtype=jnp.int32)[:, None, None, None] * c
         + jnp.arange(c, dtype=jnp.int32)[None, None, None, :])
  hist = jnp.zeros((m * c * 256,), jnp.int32).at[(q + 256 * row).reshape(-1)].add(1)
  return hist.reshape(m, c, 256)


def _lo_hi(hist: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Lowest and highest level present, ``[M, C, 1]`` float32 each, from ``hist [M, C, 256]``."""
  present = hist > 0
  lo = jnp.argmax(present, axis=-1)
  hi = 255 - jnp.argmax(present[..., ::-1], axis=-1)
  return lo[..., None].astype(jnp.float32), hi[..., None].astype(jnp.float32)


def _autocontrast_luts(lo: jax.Array, hi: jax.Array) -> jax.Array:
  """``ops.autocontrast_lut`` from each channel's ``lo, hi [M, C, 1]`` -> ``[M, C, 256]``."""
  levels = jnp.arange(256, dtype=jnp.float32)[None, None, :]
  span = jnp.where(hi > lo, hi - lo, 1.0)
  stretched = jnp.clip(jnp.floor((levels - lo) * 255.0 / span), 0.0, 255.0)
  return jnp.where(hi > lo, stretched, levels)


def _equalize_luts(hist: jax.Array, hi: jax.Array, num_pixels: int) -> jax.Array:
  """``ops.equalize_lut`` from ``hist [M, C, 256]`` and the top level ``hi [M, C, 1]``."""
  below = jnp.cumsum(hist, axis=-1) - hist  # #{pixels < i}
  count_top = jnp.take_along_axis(hist, hi.astype(jnp.int32), axis=-1)  # [M, C, 1]
  step = (num_pixels - count_top) // 255
  safe = jnp.maximum(step, 1)
  lut = jnp.minimum((safe // 2 + below) // safe, 255).astype(jnp.float32)
  return jnp.where(step > 0, lut, jnp.arange(256, dtype=jnp.float32)[None, None, :])


def _warp_batched(levels: jax.Array, coeffs: jax.Array, lut: jax.Array, *, fill: jax.Array,
                  resample: str) -> jax.Array:
  """``ops.warp_levels(levels[i], coeffs[i], lut=lut[i])`` for ``[M, H, W, C]`` with 1-D gathers.

  Valid only when, per image, the matrix or the table is the identity (one op per chain
  step): the table is then applied to the top-left tap alone. With the identity matrix the
  bilinear weights of the other taps are exactly 0, so the output is ``lut[levels]``; with the
  identity table it is the plain warp. This saves three table lookups per pixel.
  """
  m, h, w, c = levels.shape
  ys = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
  xs = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
  k = [coeffs[:, j][:, None, None] for j in range(6)]
  u = k[0] * xs + k[1] * ys + k[2]  # [M, H, W]
  v = k[3] * xs + k[4] * ys + k[5]
  inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
  flat = levels.reshape(m * h * w, c)
  base = (jnp.arange(m, dtype=jnp.int32) * (h * w))[:, None, None]
  lut_flat = lut.reshape(-1)
  lut_rows = 256 * (jnp.arange(m, dtype=jnp.int32)[:, None, None, None] * c
                    + jnp.arange(c, dtype=jnp.int32)[None, None, None, :])

  def gather(yy, xx):
    return flat[(base + yy * w + xx).reshape(-1)].reshape(m, h, w, c)

  def gather_lut(yy, xx):
    return lut_flat[gather(yy, xx).astype(jnp.int32) + lut_rows]

  out = ops.sample_pil(gather, u, v, h, w, resample=resample, first_tap=gather_lut)
  return jnp.where(inside[..., None], out, fill)


def apply_ops(levels: jax.Array, op: jax.Array, level: jax.Array, sign: jax.Array, *,
              all_ops: bool = False, fill: float | jax.Array = 0.0,
              resample: str = "bilinear") -> jax.Array:
  """Applies op ``op[i]`` (or the identity for ``IDENTITY_OP``) to image ``i`` of a batch.

  Args:
    levels: ``[M, H, W, C]`` float32 levels on the 0..255 grid.
    op: ``[M]`` int32 indices into ``ALL_OPS``, or ``IDENTITY_OP``.
    level: ``[M]`` float32 AugMix levels; ``sign``: ``[M]`` +-1.
    all_ops: static; include the blend stage for color/contrast/brightness/sharpness.
    fill: level (0..255) for pixels warped in from outside.
    resample: static ``"bilinear"`` or ``"nearest"``.

  Returns:
    ``[M, H, W, C]`` levels; image ``i`` equals ``ops.<ALL_OPS[op[i]]>`` at the magnitude
    ``op_magnitudes(level[i], sign[i])``. The cost is the same for every op: point ops are
    one lookup table and affine ops one matrix, applied in a single gather pass (the table
    goes through every sampled pixel; for a point op the matrix is the identity, for an affine
    op the table is), plus one blend with ``all_ops``.
  """
  ops._check_resample(resample)
  m, h, w, c = levels.shape
  mag = jax.vmap(lambda l, s: op_magnitudes(l, s, h, w))(level, sign)
  # Tables and matrices are selected by a one-hot contraction, not a chain of `where`s: XLA
  # does not fuse a dot into its consumers, so the selection is computed once per image
  # instead of once per gathered pixel (the `where` version ran ~5x slower on CPU).
  identity = jnp.broadcast_to(jnp.arange(256, dtype=jnp.float32), (m, c, 256))
  hist = _histograms(levels)  # shared by autocontrast and equalize
  lo, hi = _lo_hi(hist)
  point = jnp.stack([
      identity,
      _autocontrast_luts(lo, hi),
      _equalize_luts(hist, hi, h * w),
      jnp.broadcast_to(jax.vmap(ops.posterize_lut)(mag["posterize"])[:, None, :], (m, c, 256)),
      jnp.broadcast_to(jax.vmap(ops.solarize_lut)(mag["solarize"])[:, None, :], (m, c, 256)),
  ], axis=1)  # [M, 5, C, 256]
  point_ids = jnp.array([IDENTITY_OP, _OP["autocontrast"], _OP["equalize"], _OP["posterize"],
                         _OP["solarize"]])
  pick = op[:, None] == point_ids[None, :]
  pick = pick.at[:, 0].set(~jnp.any(pick[:, 1:], axis=1)).astype(jnp.float32)
  lut = jnp.einsum("mk,mkcl->mcl", pick, point, precision=jax.lax.Precision.HIGHEST)
  affine = jnp.stack([
      jnp.broadcast_to(ops.identity_matrix(), (m, 6)),
      jax.vmap(lambda d: ops.rotate_matrix(d, h, w))(mag["rotate"]),
      ops.shear_x_matrix(mag["shear"]),
      ops.shear_y_matrix(mag["shear"]),
      ops.translate_x_matrix(mag["translate_x"]),
      ops.translate_y_matrix(mag["translate_y"]),
  ], axis=1)  # [M, 6, 6]
  affine_ids = jnp.array([IDENTITY_OP, _OP["rotate"], _OP["shear_x"], _OP["shear_y"],
                          _OP["translate_x"], _OP["translate_y"]])
  pick = op[:, None] == affine_ids[None, :]
  pick = pick.at[:, 0].set(~jnp.any(pick[:, 1:], axis=1)).astype(jnp.float32)
  coeffs = jnp.einsum("mk,mkj->mj", pick, affine, precision=jax.lax.Precision.HIGHEST)
  out = _warp_batched(levels, coeffs, lut, fill=jnp.asarray(fill, jnp.float32),
                      resample=resample)
  # ImageEnhance blends (all_ops); factor 1 is an exact identity. Within one step only one op
  # is active, so running the blend after the warp changes nothing.
  if all_ops:
    per = lambda a: a.reshape((m,) + (1,) * (out.ndim - 1))  # noqa: E731
    degenerate = jnp.where(per(op == _OP["color"]), jax.vmap(ops.color_degenerate)(out), 0.0)
    degenerate = jnp.where(per(op == _OP["contrast"]), jax.vmap(ops.contrast_degenerate)(out),
                           degenerate)
    degenerate = jnp.where(per(op == _OP["sharpness"]), jax.vmap(ops.smooth_levels)(out),
                           degenerate)
    is_enhance = (op >= _OP["color"]) & (op <= _OP["sharpness"])
    factor = jnp.where(is_enhance, mag["factor"], 1.0)
    out = ops.enhance_levels(degenerate, out, per(factor))
  return out


def _run_chains(images: jax.Array, params: AugMixParams, *, all_ops: bool, fill: float,
                resample: str) -> jax.Array:
  """AugMix of ``images [B, H, W, C]`` with batched ``params`` (leading axis B)."""
  b, h, w, c = images.shape
  width, depth = params.ops.shape[-2:]
  start = ops.to_levels(images)
  chains = jnp.broadcast_to(start[:, None], (b, width, h, w, c)).reshape(b * width, h, w, c)
  fill_level = jnp.round(jnp.asarray(fill, jnp.float32) * 255.0)
  n = b * width
  op = params.ops.reshape(n, depth)
  level = params.levels.reshape(n, depth)
  sign = params.signs.reshape(n, depth)
  step = functools.partial(apply_ops, all_ops=all_ops, fill=fill_level, resample=resample)
  # Chains are sorted by depth (deepest first), so the chains still active at step d are a
  # prefix. Step d then runs on the first `bound` rows only, where `bound` is 4 standard
  # deviations above the expected active count for depth ~ U{1..D}; in the rare batch with
  # more active chains a `lax.cond` runs the full step, so the result is always exact. With
  # depth = -1 this skips ~28% of the op applications. The cond's output is a materialized
  # buffer, which also keeps XLA from fusing one step's warp into the next step's gathers
  # (that recomputed each step once per tap and ran ~10x slower on CPU).
  active = op != IDENTITY_OP  # [N, D], a prefix per row
  order = jnp.argsort(-jnp.sum(active, axis=1), stable=True)
  op, level, sign = op[order], level[order], sign[order]
  chains = chains[order]
  for d in range(depth):
    p = (depth - d) / depth
    bound = min(n, int(math.ceil((p * n + 4.0 * math.sqrt(n * p * (1 - p)) + 1) / 8.0) * 8))
    if d == 0 or bound >= n:
      chains = step(chains, op[:, d], level[:, d], sign[:, d])
      continue
    full = lambda x, d=d: step(x, op[:, d], level[:, d], sign[:, d])  # noqa: E731

    def partial(x, d=d, k=bound):
      head = step(x[:k], op[:k, d], level[:k, d], sign[:k, d])
      return jax.lax.dynamic_update_slice_in_dim(x, head, 0, axis=0)

    chains = jax.lax.cond(jnp.sum(active[:, d]) > bound, full, partial, chains)
  chains = chains[jnp.argsort(order)]
  chains = chains.reshape(b, width, h, w, c)
  weights = params.weights.astype(jnp.float32)
  # An unrolled sum: XLA:CPU ran jnp.sum over the chain axis ~20x slower.
  mix = sum(weights[:, j, None, None, None] * chains[:, j] for j in range(width)) / 255.0
  m = params.skip.astype(jnp.float32)[:, None, None, None]
  out = (1.0 - m) * images.astype(jnp.float32) + m * mix
  return jnp.clip(out, 0.0, 1.0).astype(images.dtype)  # rounding could leave 1 + 1e-7


def augmix_with_params(images: jax.Array, params: AugMixParams, *, all_ops: bool = False,
                       fill: float = 0.0, resample: str = "bilinear") -> jax.Array:
  """Deterministic AugMix of ``images [B, H, W, C]`` in [0, 1] given the drawn ``params``.

  ``out_i = (1 - m_i) x_i + m_i sum_j w_ij chain_ij(x_i)``, each chain on the 256-level grid.
  Example ``i`` depends only on ``images[i]`` and row ``i`` of ``params``.

  Args:
    images: ``[B, H, W, C]`` float in [0, 1].
    params: ``AugMixParams`` with leading axis ``B``.
    all_ops: static; must be True if ``params`` may hold the 4 extra ops.
    fill: value in [0, 1] for pixels warped in from outside (0 as in the reference).
    resample: static, ``"bilinear"`` (reference) or ``"nearest"``.

  Returns:
    ``[B, H, W, C]`` in [0, 1], dtype of ``images``.

  Example:
    >>> p = sample_augmix_params(jax.random.key(0), 2)
    >>> jax.eval_shape(augmix_with_params, jnp.zeros((2, 8, 8, 3)), p).shape
    (2, 8, 8, 3)
  """
  _check_images(images)
  if params.ops.shape[0] != images.shape[0]:
    raise ValueError(f"params must have one row per image ({images.shape[0]}); received "
                     f"{params.ops.shape[0]}.")
  return _run_chains(images, params, all_ops=all_ops, fill=fill, resample=resample)


def augmix(key: jax.Array, images: jax.Array, *, width: int = 3, depth: int = -1,
           severity: float = 3.0, alpha: float = 1.0, all_ops: bool = False,
           fill: float = 0.0, resample: str = "bilinear") -> jax.Array:
  """AugMix of a batch, every example with its own chains, ops, magnitudes and weights.

  ``augmix(key, x) == augmix_with_params(x, sample_augmix_params(key, B, ...))``; every
  example has its own draws, and its result depends on no other example.

  Args:
    key: PRNG key.
    images: ``[B, H, W, C]`` float32 in [0, 1].
    width: static number of chains (3).
    depth: static chain depth; -1 (default) draws 1..3 per chain.
    severity: op severity (3), levels ``U(0.1, severity)``.
    alpha: Dirichlet / Beta concentration (1).
    all_ops: static; add color, contrast, brightness, sharpness (they overlap CIFAR-C).
    fill: value in [0, 1] outside warped images (0, PIL's default used by the reference).
    resample: static ``"bilinear"`` (reference) or ``"nearest"``.

  Returns:
    ``[B, H, W, C]`` in [0, 1], dtype of ``images``.

  Example:
    >>> x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
    >>> jax.jit(augmix)(jax.random.key(1), x).shape  # jit it: eager dispatch is slow
    (4, 32, 32, 3)
  """
  _check_images(images)
  params = sample_augmix_params(key, images.shape[0], width=width, depth=depth,
                                severity=severity, alpha=alpha, all_ops=all_ops)
  return _run_chains(images, params, all_ops=all_ops, fill=fill, resample=resample)


def augmix_views(key: jax.Array, images: jax.Array, **kwargs) -> jax.Array:
  """AugMix's JSD views: ``[B, 3, H, W, C]`` = (clean, augmix, augmix), independent draws.

  Args:
    key: PRNG key.
    images: ``[B, H, W, C]`` float32 in [0, 1].
    **kwargs: keyword options of ``augmix``.

  Returns:
    ``[B, 3, H, W, C]`` example-major views (the layout of ``drojax.methods.Views``).

  Example:
    >>> x = jnp.zeros((2, 8, 8, 3))
    >>> jax.eval_shape(augmix_views, jax.random.key(0), x).shape
    (2, 3, 8, 8, 3)
  """
  _check_images(images)
  # Two sequential passes of B images (lax.map), not one pass of 2B: on CPU the 2B pass's
  # working set fell out of cache and cost ~30% more.
  keys = jax.random.split(key, 2)
  aug = jax.lax.map(lambda k: augmix(k, images, **kwargs), keys)  # [2, B, H, W, C]
  return jnp.stack([images, aug[0], aug[1]], axis=1)
