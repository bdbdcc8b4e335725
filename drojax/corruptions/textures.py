"""Loading user frost textures (the one I/O module of :mod:`drojax.corruptions`).

The reference frost corruption blends crops of six frost photographs that ship with the
hendrycks/robustness repository (``frost1.png`` ... ``frost6.jpg``); drojax cannot ship them.
Point :func:`load_frost_textures` at a folder of such images and pass the result to
``corrupt(..., name="frost", frost_textures=...)``.
"""

from __future__ import annotations

import os

import numpy as np

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def load_frost_textures(folder: str, *, scale: float = 0.2, min_size: int = 32) -> np.ndarray:
  """Reads every image in ``folder`` as an RGB frost texture.

  Each image is resized by ``scale`` (bilinear; the reference shrinks its photographs by 0.2
  with OpenCV) and all are centre-cropped to the smallest common size, so they stack.

  Args:
    folder: directory with ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.webp`` files.
    scale: resize factor applied to every image.
    min_size: smallest accepted side after resizing (the corrupted images' size).

  Returns:
    ``[T, Ht, Wt, 3]`` float32 array in [0, 1].

  Raises:
    ValueError: missing folder, no images, or images smaller than ``min_size``.
  """
  from PIL import Image  # pillow is a dependency; imported here to keep the package light

  if not os.path.isdir(folder):
    raise ValueError(f"folder must be a directory of frost images; {folder!r} is not one")
  files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_EXTENSIONS))
  if not files:
    raise ValueError(f"folder {folder!r} holds no images ({', '.join(_EXTENSIONS)})")
  images = []
  for name in files:
    with Image.open(os.path.join(folder, name)) as im:
      im = im.convert("RGB")
      w, h = im.size
      size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
      images.append(np.asarray(im.resize(size, Image.BILINEAR), np.float32) / 255.0)
  th = min(im.shape[0] for im in images)
  tw = min(im.shape[1] for im in images)
  if th < min_size or tw < min_size:
    raise ValueError(f"frost textures must be at least {min_size}x{min_size} after scaling by "
                     f"{scale}; the smallest in {folder!r} is {th}x{tw}")
  out = []
  for im in images:
    top = (im.shape[0] - th) // 2
    left = (im.shape[1] - tw) // 2
    out.append(im[top:top + th, left:left + tw])
  return np.stack(out)
