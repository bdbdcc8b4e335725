"""Host-side image resizing at the data boundary (uint8 NHWC in, uint8 NHWC out), with PIL."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_uint8(images: np.ndarray, size: int, *, channels: int | None = None) -> np.ndarray:
  """Bilinear resize of ``[N, H, W, C]`` uint8 images to ``[N, size, size, C']`` with PIL.

  Args:
    images: ``[N, H, W, C]`` uint8, ``C`` in (1, 3).
    size: output height and width.
    channels: output channels; 3 repeats a single channel (Fashion-MNIST / digits as RGB, as
      DRO-Augment does), None keeps ``C``.

  Returns:
    ``[N, size, size, channels or C]`` uint8.

  >>> resize_uint8(np.zeros((2, 8, 8, 1), np.uint8), 32, channels=3).shape
  (2, 32, 32, 3)
  """
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be uint8 [N, H, W, C in (1, 3)], got {images.dtype} "
                     f"{images.shape}")
  n, h, w, c = images.shape
  if (h, w) != (size, size):
    out = np.empty((n, size, size, c), np.uint8)
    for i in range(n):
      img = Image.fromarray(images[i, ..., 0] if c == 1 else images[i])
      res = np.asarray(img.resize((size, size), Image.BILINEAR))
      out[i] = res[..., None] if c == 1 else res
    images = out
  if channels is not None and channels != images.shape[-1]:
    if images.shape[-1] != 1 or channels != 3:
      raise ValueError(f"can only repeat 1 channel to 3, got {images.shape[-1]} -> {channels}")
    images = np.repeat(images, 3, axis=-1)
  return images
