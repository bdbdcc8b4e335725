"""scikit-learn's bundled handwritten digits as a 32x32 RGB dataset: real data, no download.

The 1,797 8x8 images (values 0..16) are scaled to 0..255, resized bilinearly to 32x32 with PIL
and repeated to 3 channels, so the whole CIFAR pipeline (PreActResNet-18, AugMix, the CIFAR-C
corruptions) runs on them unchanged. This is the offline default of the quick-start.

The train/test split is fixed: a class-stratified split with a fixed seed, 20% test.
"""

from __future__ import annotations

import numpy as np

from drojax.data.arrays import ArrayDataset
from drojax.data.images import resize_uint8

NUM_CLASSES = 10
TEST_FRACTION = 0.2
_SPLIT_SEED = 20260101


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(_SPLIT_SEED)
  train, test = [], []
  for c in range(NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == c))
    k = int(round(TEST_FRACTION * len(idx)))
    test.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: str, *, size: int = 32) -> ArrayDataset:
  """The digits ``split`` ('train': 1,438 images, 'test': 359) as uint8 ``[N, size, size, 3]``.

  Ids are the indices in scikit-learn's order, so they are stable across splits.

  >>> ds = load_digits("test")
  >>> len(ds), ds.image_shape, ds.num_classes
  (359, (32, 32, 3), 10)
  """
  from sklearn.datasets import load_digits as _sk_load_digits

  if split not in ("train", "test"):
    raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
  raw = _sk_load_digits()
  pixels = np.clip(np.round(raw.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  labels = raw.target.astype(np.int32)
  train_idx, test_idx = _split_indices(labels)
  idx = train_idx if split == "train" else test_idx
  images = resize_uint8(pixels[idx][..., None], size, channels=3)
  return ArrayDataset.create(images, labels[idx], num_classes=NUM_CLASSES, ids=idx,
                             name=f"digits/{split}")
