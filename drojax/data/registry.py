"""``load_dataset(name, split)``: one entry point for every dataset drojax knows.

Names: ``digits`` (bundled, offline), ``fashion_mnist``, ``cifar10``, ``cifar100``,
``waterbirds`` (a folder, see ``drojax.data.waterbirds``), the group-shift benchmarks
``colored_digits`` (bundled), ``colored_fashion_mnist`` and ``dominoes`` (built offline from
``data_dir``, see ``drojax.data.group_shift``) and ``npz:PATH``.

``npz:PATH`` accepts a directory holding ``train.npz`` and ``test.npz``, a template containing
``{split}`` (``npz:/data/my_{split}.npz``), or a file named ``..._train.npz`` whose test split
is the sibling ``..._test.npz``. Single-channel arrays (``[N, H, W]`` or ``[N, H, W, 1]``) are
repeated to 3 channels, as Fashion-MNIST is: the models' normalization and the CIFAR-C
corruptions are defined on RGB.

``load_train_test`` loads both splits with ONE number of classes: the training split declares
it (a ``num_classes`` key) or it is inferred from the training labels; test labels outside it
are a ``DataError`` naming the test file.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from drojax.data.arrays import ArrayDataset, load_npz
from drojax.data.errors import DataError, DataNotFoundError

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100", "waterbirds", "colored_digits",
            "colored_fashion_mnist", "dominoes")
SPLITS = ("train", "test", "validation")


def npz_split_path(path: str, split: str) -> str:
  """Where the ``split`` of ``npz:path`` lives (see the module docstring).

  >>> npz_split_path("/d/cifar_train.npz", "test")
  '/d/cifar_test.npz'
  >>> npz_split_path("/d/x_{split}.npz", "train")
  '/d/x_train.npz'
  """
  if "{split}" in path:
    return path.replace("{split}", split)
  if os.path.isdir(path):
    return os.path.join(path, f"{split}.npz")
  stem, ext = os.path.splitext(path)
  for s in SPLITS:
    if stem.endswith("_" + s):
      return stem[:-len(s)] + split + ext
  return path


def validate_name(name: str) -> str:
  """Returns ``name`` if it is a known dataset or ``npz:PATH``; else raises ``ValueError``."""
  if name.startswith("npz:") and len(name) > 4:
    return name
  if name not in DATASETS:
    import difflib

    close = difflib.get_close_matches(name, DATASETS, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown dataset '{name}'; expected one of {', '.join(DATASETS)} or "
                     f"npz:PATH.{hint}")
  return name


def load_dataset(name: str, split: str, *, data_dir: str | None = None,
                 download: bool = False, image_size: int | None = None,
                 num_classes: int | None = None) -> ArrayDataset:
  """Loads ``split`` of dataset ``name`` into memory as uint8 NHWC.

  Args:
    name: one of ``DATASETS`` or ``npz:PATH``.
    split: 'train' or 'test' ('validation' for waterbirds and the group-shift benchmarks).
    data_dir: where to look first (npz files, idx files, prepared tfds data, archives).
    download: allow downloading (CIFAR archives, checksummed) when nothing is found locally and
      the network is reachable. Offline, a missing dataset fails at once.
    image_size: waterbirds only: the height and width images are resized to (default 64).
    num_classes: ``npz:`` only: the number of classes (default: declared in the file, else
      inferred from its labels); ``load_train_test`` passes the training split's.

  Raises:
    DataNotFoundError: the data is not available; the message says where we looked and how to
      supply it.
    ValueError: unknown name or split, or a malformed file (the message names the file).

  >>> load_dataset("digits", "test").image_shape
  (32, 32, 3)
  """
  validate_name(name)
  if image_size is not None and name != "waterbirds":
    raise ValueError(f"image_size applies to waterbirds only (its images are resized), not "
                     f"{name!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if name.startswith("npz:"):
    path = npz_split_path(name[4:], split)
    if not os.path.isfile(path):
      raise DataNotFoundError(name, [path], f"Write the {split} split to {path} (an .npz with "
                              "'images' uint8 [N, H, W, C] and 'labels' int [N]).")
    ds = load_npz(path, name=f"{os.path.basename(path)}", num_classes=num_classes)
    if ds.images.shape[-1] == 1:
      ds = dataclasses.replace(ds, images=np.repeat(ds.images, 3, axis=-1))
    return ds
  if name == "digits":
    from drojax.data.digits import load_digits

    return load_digits(split)
  if name == "fashion_mnist":
    from drojax.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(split, data_dir=data_dir)
  if name in ("cifar10", "cifar100"):
    from drojax.data.tfds_builders import load_cifar

    return load_cifar(name, split, data_dir=data_dir, download=download)
  if name in ("colored_digits", "colored_fashion_mnist", "dominoes"):
    from drojax.data.group_shift import load_group_shift

    return load_group_shift(name, split, data_dir=data_dir).dataset
  if name == "waterbirds":
    from drojax.data.waterbirds import load_waterbirds

    if not data_dir:
      raise DataNotFoundError("waterbirds", [], "Pass --data_dir=DIR, a folder with "
                              "metadata.csv (img_filename, y, place, split) and the images.")
    return load_waterbirds(data_dir, split,
                           **({} if image_size is None else {"image_size": image_size}))
  raise AssertionError(name)


def load_train_test(name: str, *, data_dir: str | None = None, download: bool = False,
                    image_size: int | None = None) -> tuple[ArrayDataset, ArrayDataset]:
  """The ``train`` and ``test`` splits of ``name``, checked against each other.

  The number of classes comes from the training split (for ``npz:`` declared in the file or
  inferred once from its labels) and the test split is read with it, so a test label outside
  the trained classes is an error rather than a prediction that can never be right.

  Raises:
    DataError: a file is malformed, the test labels fall outside the training split's classes,
      or the two splits' images differ in shape (the message names the file).
    DataNotFoundError: a split is missing.
  """
  kwargs = dict(data_dir=data_dir, download=download, image_size=image_size)
  try:
    train = load_dataset(name, "train", **kwargs)
  except DataError:
    raise
  except ValueError as e:  # the loaders' messages name their file: keep them, as a DataError
    raise DataError(str(e)) from None
  k = train.num_classes
  npz = name.startswith("npz:")
  try:
    test = load_dataset(name, "test", num_classes=k if npz else None, **kwargs)
  except DataError as e:
    if npz and "labels must lie in" in str(e):
      raise DataError(f"{e} (the training split {npz_split_path(name[4:], 'train')} has {k} "
                      "classes)") from None
    raise
  except ValueError as e:
    raise DataError(str(e)) from None
  where = npz_split_path(name[4:], "test") if npz else f"{name} test split"
  if test.num_classes != k or (len(test) and int(test.labels.max()) >= k):
    raise DataError(f"{where}: test labels span {test.num_classes} classes, the training split "
                    f"{k}")
  if train.image_shape != test.image_shape:
    raise DataError(f"{where}: test images {test.image_shape} differ in shape from the training "
                    f"images {train.image_shape}")
  return train, test
