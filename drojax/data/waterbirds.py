"""Waterbirds-style image folders: ``metadata.csv`` + images, with group ids.

``metadata.csv`` has (at least) the columns ``img_filename`` (relative to the folder), ``y``
(the label, 0 landbird / 1 waterbird), ``place`` (the background, 0 land / 1 water) and
``split`` (0 train, 1 validation, 2 test; the words are accepted too), as in the group-DRO
release (kohpangwei/group_DRO). The group of an example is ``2 * y + place``, so groups
0..3 are (landbird, land), (landbird, water), (waterbird, land), (waterbird, water).

Images are decoded with PIL, converted to RGB and resized (bilinear) to ``image_size``.
"""

from __future__ import annotations

import csv
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from drojax.data.arrays import ArrayDataset
from drojax.data.errors import DataNotFoundError

NUM_CLASSES = 2
NUM_GROUPS = 4
_SPLITS = {"train": 0, "validation": 1, "val": 1, "test": 2}
_REQUIRED = ("img_filename", "y", "place", "split")


def group_of(y: np.ndarray, place: np.ndarray) -> np.ndarray:
  """``2 * y + place``: the Waterbirds group id in 0..3.

  >>> group_of(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist()
  [0, 1, 2, 3]
  """
  return 2 * np.asarray(y) + np.asarray(place)


def _split_code(value: str, path: str, line: int) -> int:
  value = value.strip().lower()
  if value in _SPLITS:
    return _SPLITS[value]
  try:
    code = int(value)
  except ValueError:
    code = -1
  if code not in (0, 1, 2):
    raise ValueError(f"{path}:{line}: split must be 0/1/2 or train/validation/test, got {value!r}")
  return code


def _binary(value: str, column: str, path: str, line: int) -> int:
  try:
    v = int(value)
  except ValueError:
    v = -1
  if v not in (0, 1):
    raise ValueError(f"{path}:{line}: column '{column}' must be 0 or 1, got {value!r}")
  return v


def load_waterbirds(directory: str, split: str, *, image_size: int = 64) -> ArrayDataset:
  """Loads ``split`` of a Waterbirds-style folder as uint8 ``[N, image_size, image_size, 3]``.

  Args:
    directory: folder holding ``metadata.csv`` and the images it names.
    split: 'train', 'validation' or 'test'.
    image_size: output height and width.

  Returns:
    An ``ArrayDataset`` with labels ``y``, groups ``2 * y + place`` and ids = the row index in
    ``metadata.csv``.

  Raises:
    DataNotFoundError if ``metadata.csv`` is missing; ValueError naming the file (and line) for
    a missing column, a bad value, or an image that is missing or cannot be decoded.
  """
  if split not in _SPLITS:
    raise ValueError(f"waterbirds split must be one of train/validation/test, got {split!r}")
  meta = os.path.join(directory, "metadata.csv")
  if not os.path.isfile(meta):
    raise DataNotFoundError("waterbirds", [meta], "Pass --data_dir=DIR, a folder with "
                            "metadata.csv (img_filename, y, place, split) and the images "
                            "(the group-DRO Waterbirds release unpacks to such a folder).")
  want = _SPLITS[split]
  images, labels, groups, ids = [], [], [], []
  root = os.path.realpath(directory)
  with open(meta, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{meta}: missing column(s) {missing}; found {reader.fieldnames}")
    for row_index, row in enumerate(reader):
      line = row_index + 2
      if _split_code(row["split"], meta, line) != want:
        continue
      y = _binary(row["y"], "y", meta, line)
      place = _binary(row["place"], "place", meta, line)
      path = os.path.realpath(os.path.join(directory, row["img_filename"]))
      if not path.startswith(root + os.sep):
        raise ValueError(f"{meta}:{line}: img_filename {row['img_filename']!r} points outside "
                         f"{directory}")
      try:
        with Image.open(path) as img:
          img = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
          images.append(np.asarray(img, np.uint8))
      except FileNotFoundError:
        raise ValueError(f"{meta}:{line}: image {path} does not exist") from None
      except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{meta}:{line}: image {path} cannot be decoded ({e})") from None
      labels.append(y)
      groups.append(group_of(y, place))
      ids.append(row_index)
  if not images:
    raise ValueError(f"{meta}: no rows with split '{split}'")
  return ArrayDataset.create(np.stack(images), np.array(labels), num_classes=NUM_CLASSES,
                             ids=np.array(ids), groups=np.array(groups),
                             name=f"waterbirds/{split}")
