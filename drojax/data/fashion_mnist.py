"""Fashion-MNIST offline: the original idx files (Debian ``dataset-fashion-mnist``) or ``.npz``.

Images are resized 28x28 -> 32x32 (bilinear, PIL) and repeated to 3 channels, as DRO-Augment's
Fashion-MNIST runs do, so the CIFAR models and corruptions apply unchanged.

idx format (big-endian): 2 zero bytes, a dtype code (0x08 = uint8), the number of dimensions
``d``, ``d`` uint32 sizes, then the data. Parsed with NumPy; nothing is executed.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from drojax.data.arrays import ArrayDataset, load_npz
from drojax.data.errors import DataNotFoundError
from drojax.data.images import resize_uint8

NUM_CLASSES = 10
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_NPZ_FILES = {"train": "fashion_mnist_train.npz", "test": "fashion_mnist_test.npz"}
HOW_TO_SUPPLY = (
    "Supply it with --data_dir=DIR holding fashion_mnist_{train,test}.npz or the idx files "
    "({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]), install the Debian package "
    "'dataset-fashion-mnist' (files in " + DEBIAN_DIR + "), or pass --dataset=npz:PATH.")


def parse_idx(data: bytes, *, name: str = "idx") -> np.ndarray:
  """Parses the bytes of an (uncompressed) uint8 idx file into an array.

  >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
  [7, 8, 9]
  """
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{name}: not an idx file (bad magic number)")
  if data[2] != 0x08:
    raise ValueError(f"{name}: only uint8 idx data (type 0x08) is supported, got 0x{data[2]:02x}")
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{name}: truncated idx header")
  shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
  size = int(np.prod(shape)) if shape else 1
  if len(data) - header != size:
    raise ValueError(f"{name}: idx header says shape {shape} ({size} bytes) but the file holds "
                     f"{len(data) - header} data bytes (truncated or corrupt)")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx(path: str) -> np.ndarray:
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        data = f.read()
    else:
      with open(path, "rb") as f:
        data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path}: truncated or corrupt ({e})") from None
  return parse_idx(data, name=path)


def _find(directory: str, stem: str) -> str | None:
  for candidate in (stem + ".gz", stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def load_idx_dir(directory: str, split: str) -> ArrayDataset | None:
  """Loads a split from idx files in ``directory`` (None if they are not there)."""
  images_stem, labels_stem = _IDX_FILES[split]
  images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
  if images_path is None or labels_path is None:
    return None
  images, labels = _read_idx(images_path), _read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
    raise ValueError(f"{images_path}: images {images.shape} and labels {labels.shape} "
                     "do not match ([N, 28, 28] and [N])")
  return ArrayDataset.create(images[..., None], labels, num_classes=NUM_CLASSES,
                             name=f"fashion_mnist/{split}")


def to_rgb32(dataset: ArrayDataset) -> ArrayDataset:
  """Resizes to 32x32 and repeats to 3 channels (DRO-Augment's Fashion-MNIST preprocessing)."""
  import dataclasses

  return dataclasses.replace(dataset, images=resize_uint8(dataset.images, 32, channels=3))


def load_fashion_mnist(split: str, *, data_dir: str | None = None,
                       search_debian: bool = True) -> ArrayDataset:
  """Fashion-MNIST ``split`` as uint8 ``[N, 32, 32, 3]``, found offline.

  Looks, in order, in ``data_dir`` for ``fashion_mnist_{split}.npz`` then the idx files, then
  in the Debian package's directory.

  Raises:
    DataNotFoundError naming where it looked and how to supply the data.
  """
  if split not in _IDX_FILES:
    raise ValueError(f"fashion_mnist split must be 'train' or 'test', got {split!r}")
  looked = []
  dirs = ([data_dir] if data_dir else []) + ([DEBIAN_DIR] if search_debian else [])
  for directory in dirs:
    npz = os.path.join(directory, _NPZ_FILES[split])
    if os.path.isfile(npz):
      ds = load_npz(npz, num_classes=NUM_CLASSES, name=f"fashion_mnist/{split}")
      return to_rgb32(ds)
    ds = load_idx_dir(directory, split)
    if ds is not None:
      return to_rgb32(ds)
    looked.append(directory)
  raise DataNotFoundError("fashion_mnist", looked, HOW_TO_SUPPLY)
