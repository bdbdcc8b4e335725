"""CIFAR-C corruptions in pure JAX: the 15 standard types, 4 extras, and their severity tables.

Images are NHWC float32 in [0, 1]; ``corrupt`` rejects concrete images outside it (e.g. 0..255,
which clipping would destroy) with a ValueError, and skips that check under ``jit``. One entry
point serves users and tools::

  corrupt(key, images, name="fog", severity=3)                  # the standard table
  corrupt(key, images, name="fog", severity=3, table="refined")  # DRO-Augment's CIFAR-10 table
  corrupt(key, images, name="fog", severity=2.5)                 # continuous strength

Each corruption is also a pure function ``f(key, images, params)`` in its module
(:mod:`~drojax.corruptions.noise`, :mod:`~drojax.corruptions.blur`,
:mod:`~drojax.corruptions.weather`, :mod:`~drojax.corruptions.digital`); the parameter rows
and the interpolation rule for continuous severities are in :mod:`~drojax.corruptions.tables`.
The algorithms follow the reference makers (hendrycks/robustness ``make_cifar_c.py``;
brownight/DRO-Augment ``NewBench``); differences are documented per function.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from drojax._checks import check_unit_range
from drojax.corruptions import blur, digital, noise, tables, weather
from drojax.corruptions.tables import EXTRA_NAMES, NAMES, STANDARD_NAMES, TABLES, params_at

Array = jax.Array

_REGISTRY: dict[str, Callable[..., Array]] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": weather.spatter,
    "saturate": digital.saturate,
}
assert tuple(_REGISTRY) == NAMES


def _check_images(images: Any) -> Array:
  if not hasattr(images, "ndim") or images.ndim != 4:
    raise ValueError("images must be a float array [N, H, W, C] in [0, 1]; got "
                     f"{getattr(images, 'shape', type(images).__name__)}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images must be floating point in [0, 1] (convert uint8 with x / 255); "
                    f"got dtype {images.dtype}")
  if images.shape[-1] != 3:
    raise ValueError(f"images must be RGB (last axis 3); got shape {images.shape}")
  check_unit_range("images", images)
  return images


def corrupt(key: Array, images: Array, *, name: str, severity: Any, table: str = "standard",
            frost_textures: Any = None) -> Array:
  """Applies the corruption ``name`` at ``severity`` to a batch of images.

  Args:
    key: PRNG key; every example draws its own randomness from it.
    images: ``[N, H, W, 3]`` float in [0, 1] (CIFAR's 32x32 is the target size).
    name: one of :data:`NAMES` (static under ``jit``).
    severity: an int 1..5 (a table row) or a float in [0, 5] interpolating the parameters
      linearly between rows, row 0 being the identity parameters where they exist (see
      :mod:`~drojax.corruptions.tables`). Python numbers make the parameters static; a JAX
      scalar is allowed (traced; array sizes then follow documented bounds).
    table: ``"standard"``, ``"refined"`` (DRO-Augment CIFAR-10) or ``"refined_cifar100"``
      (static). The refined tables cover the 15 standard types; the extras use their standard
      rows.
    frost_textures: optional textures for ``frost``: ``[T, Ht, Wt, 3]`` floats in [0, 1] or a
      :class:`~drojax.corruptions.textures.FrostTextures` from
      :func:`~drojax.corruptions.textures.load_frost_textures` (photographs resized as the
      reference does); the default is a procedural texture calibrated to the reference's frost.

  Returns:
    ``[N, H, W, 3]`` images of the same dtype, clipped to [0, 1].

  Raises:
    ValueError: unknown ``name`` or ``table``, severity out of range, bad image shape,
      ``frost_textures`` with another corruption.

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.full((2, 32, 32, 3), 0.5)
  >>> corrupt(jax.random.key(0), x, name="contrast", severity=2).shape
  (2, 32, 32, 3)
  """
  tables.check_name(name)
  if frost_textures is not None and name != "frost":
    raise ValueError(f"frost_textures is only for name='frost'; got name={name!r}")
  tables.check_table(table)
  images = _check_images(images)
  params = params_at(name, severity, table)
  fn = _REGISTRY[name]
  dtype = images.dtype
  x = images.astype(jnp.float32)
  if name == "frost":
    out = fn(key, x, params, textures=frost_textures)
  else:
    out = fn(key, x, params)
  out = jnp.clip(out, 0.0, 1.0)
  if not isinstance(severity, (int, float)):
    # A traced severity outside [0, 5] cannot be refused: NaN images, never a clipped severity.
    sev = jnp.asarray(severity)
    out = jnp.where((sev >= 0) & (sev <= 5), out, jnp.nan)
  return out.astype(dtype)


__all__ = ["NAMES", "STANDARD_NAMES", "EXTRA_NAMES", "TABLES", "corrupt", "params_at",
           "blur", "digital", "noise", "tables", "weather"]
