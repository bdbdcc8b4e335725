"""Loading user frost textures (the one I/O module of :mod:`drojax.corruptions`).

The reference frost corruption (hendrycks/robustness ``make_cifar_c.py``) reads one of its
frost photographs with OpenCV, shrinks it with ``cv2.resize(img, (0, 0), fx=0.2, fy=0.2)``
(plain bilinear interpolation, no antialiasing) and blends a random 32x32 crop into the image;
drojax cannot ship those photographs. Point :func:`load_frost_textures` at a folder of frost
images and pass the result to ``corrupt(..., name="frost", frost_textures=...)``, or give the
folder to the experiment CLIs as ``--config.eval.frost_dir``.

To reproduce the reference with its own photographs, put only ``frost1.png`` ... ``frost5.jpg``
in the folder: its ``np.random.randint(5)`` never draws the sixth.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Modes PIL converts to 8-bit RGB without rescaling (alpha is dropped, as OpenCV's imread does).
_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: bilinear weights in units of 1/2048


class FrostTextures(NamedTuple):
  """Frost textures of different sizes, zero-padded to a common one so they stack.

  Attributes:
    images: ``[T, Hmax, Wmax, 3]`` float32 in [0, 1]; texture ``t`` is
      ``images[t, :sizes[t, 0], :sizes[t, 1]]``.
    sizes: ``[T, 2]`` int32 (height, width) of each texture.
  """

  images: np.ndarray
  sizes: np.ndarray


def frost_files(folder: str) -> list[str]:
  """The sorted image files in ``folder`` (see :data:`EXTENSIONS`).

  Raises:
    ValueError: ``folder`` is not a directory or holds no images.
  """
  if not isinstance(folder, str) or not os.path.isdir(folder):
    raise ValueError(f"frost texture folder must be a directory of frost images; {folder!r} "
                     "is not one")
  files = sorted(f for f in os.listdir(folder)
                 if f.lower().endswith(EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))
  if not files:
    raise ValueError(f"frost texture folder {folder!r} holds no images "
                     f"({', '.join(EXTENSIONS)})")
  return files


def _axis_weights(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray, np.ndarray]:
  """Source indices and integer weights (sum 2048) of OpenCV's bilinear map along one axis."""
  inv = 1.0 / scale
  # OpenCV computes the source coordinate in double and stores it as float.
  src = ((np.arange(n_out, dtype=np.float64) + 0.5) * inv - 0.5).astype(np.float32)
  i0 = np.floor(src).astype(np.int64)
  frac = (src - i0.astype(np.float32)).astype(np.float32)
  low = i0 < 0
  high = i0 >= n_in - 1
  frac = np.where(low | high, np.float32(0.0), frac)
  i0 = np.clip(i0, 0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  one = 1 << _COEF_BITS
  w0 = np.rint((np.float32(1.0) - frac) * np.float32(one)).astype(np.int64)
  w1 = np.rint(frac * np.float32(one)).astype(np.int64)
  return i0, i1, w0, w1


def resize_bilinear_u8(image: np.ndarray, scale: float) -> np.ndarray:
  """OpenCV's ``cv2.resize(image, (0, 0), fx=scale, fy=scale)`` (``INTER_LINEAR``) on uint8.

  Output side ``round(side * scale)``; output pixel ``d`` samples the source at
  ``(d + 0.5) / scale - 0.5`` (pixel centres), clamped to the border, with the two neighbours
  weighted in units of 1/2048 and the two-stage sum rounded as OpenCV's vectorized fixed-point
  path does. No antialiasing: a 0.2 shrink picks source pixels ``2, 7, 12, ...`` exactly.
  Against ``cv2.resize`` 5.0 on random images: identical at scales 0.2, 0.3, 0.37 and 0.13,
  99.96 % identical (the rest one level off) at 0.6 and 1.7. OpenCV switches to area
  averaging for an exact 2x shrink; we do not.

  Args:
    image: ``[H, W, C]`` uint8.
    scale: factor > 0 for both axes.

  Returns:
    ``[round(H * scale), round(W * scale), C]`` uint8.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"image must be uint8 [H, W, C]; got {image.dtype} {image.shape}")
  if not scale > 0:
    raise ValueError(f"scale must be > 0; got {scale!r}")
  h, w = image.shape[:2]
  oh, ow = int(np.rint(h * scale)), int(np.rint(w * scale))
  if oh < 1 or ow < 1:
    raise ValueError(f"scale {scale} shrinks a {h}x{w} image to nothing")
  y0, y1, wy0, wy1 = _axis_weights(h, oh, scale)
  x0, x1, wx0, wx1 = _axis_weights(w, ow, scale)
  src = image.astype(np.int64)
  rows = src[:, x0] * wx0[None, :, None] + src[:, x1] * wx1[None, :, None]  # [H, ow, C]
  # OpenCV's vectorized vertical pass (the path x86 builds take): each product is scaled down
  # separately before the rounding shift, which rounds a little differently from
  # ``(sum + 2**21) >> 22``.
  top = (wy0[:, None, None] * (rows[y0] >> 4)) >> 16
  bottom = (wy1[:, None, None] * (rows[y1] >> 4)) >> 16
  return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def load_frost_textures(folder: str, *, scale: float = 0.2, min_size: int = 32) -> FrostTextures:
  """Reads every image in ``folder`` as an RGB frost texture, resized as the reference does.

  Each image is decoded to 8-bit RGB (alpha dropped) and shrunk by ``scale`` with
  :func:`resize_bilinear_u8` (OpenCV's plain bilinear ``cv2.resize``, the reference's 0.2 by
  default). Every texture keeps its own size; :func:`drojax.corruptions.weather.frost` picks a
  texture uniformly and then a crop position uniformly inside it, as the reference does.

  Args:
    folder: directory with ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.webp`` files.
    scale: resize factor applied to every image.
    min_size: smallest accepted side after resizing (the corrupted images' size).

  Returns:
    :class:`FrostTextures` (float32 images in [0, 1] and their sizes).

  Raises:
    ValueError: missing folder, no images, an image that is not 8-bit, or a texture smaller
      than ``min_size`` after resizing.
  """
  from PIL import Image  # pillow is a dependency; imported here to keep the package light

  files = frost_files(folder)
  images = []
  for name in files:
    with Image.open(os.path.join(folder, name)) as im:
      if im.mode not in _MODES:
        raise ValueError(f"frost texture {name!r} in {folder!r} has mode {im.mode}; expected an "
                         "8-bit image")
      images.append(resize_bilinear_u8(np.asarray(im.convert("RGB")), scale))
  small = [(name, im.shape[:2]) for name, im in zip(files, images)
           if min(im.shape[:2]) < min_size]
  if small:
    name, (h, w) = small[0]
    raise ValueError(f"frost textures must be at least {min_size}x{min_size} after scaling by "
                     f"{scale}; {name!r} in {folder!r} is {h}x{w}")
  hmax = max(im.shape[0] for im in images)
  wmax = max(im.shape[1] for im in images)
  out = np.zeros((len(images), hmax, wmax, 3), np.float32)
  for t, im in enumerate(images):
    out[t, :im.shape[0], :im.shape[1]] = im.astype(np.float32) / np.float32(255.0)
  sizes = np.asarray([im.shape[:2] for im in images], np.int32)
  return FrostTextures(out, sizes)
