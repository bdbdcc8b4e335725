"""The published CIFAR-10-C / CIFAR-100-C arrays (Hendrycks & Dietterich, ICLR 2019).

An I/O module: it reads files. Two sources, looked for in this order, both local only (this
module never downloads: the arrays are 2.7 GB per dataset):

1. **The Hendrycks folder layout** (the extracted ``CIFAR-10-C.tar`` / ``CIFAR-100-C.tar``):
   ``<folder>/<corruption>.npy`` (uint8 ``[50000, 32, 32, 3]``: the 10,000 test images at
   severity 1, then 2, ..., 5) and ``<folder>/labels.npy`` (``[50000]``, the test labels
   repeated per severity; a ``[10000]`` file is accepted too). ``folder`` may also be the
   parent holding ``CIFAR-10-C/`` or ``CIFAR-100-C/``. Arrays are memory-mapped, so a
   severity costs only its 30 MB.
2. **tensorflow-datasets** ``cifar10_corrupted`` (CIFAR-10 only), prepared as ArrayRecord in a
   tfds data dir, read with ``tfds.data_source`` (no TensorFlow needed to *read*; tfds's
   builder needs TensorFlow to *prepare* it). Config names are ``<tfds name>_<severity>``
   with tfds's names ``frosted_glass_blur`` (glass_blur) and ``elastic`` (elastic_transform).
   The directory is checked on disk before tfds is called, so a missing dataset fails in
   milliseconds instead of entering tfds's download/retry path.

:func:`write_folder` writes the same layout from any uint8 test images, corrupted with
:mod:`drojax.corruptions` (a fixed, shareable corrupted test set), so the loader reads it too.

Missing data raises :class:`drojax.data.errors.DataNotFoundError` (a ``FileNotFoundError``)
saying what was looked for, where, and how to supply it.

Example::

  loader = make_loader("cifar10", folder="/data/CIFAR-10-C")
  images, labels = loader("fog", 3)   # uint8 [10000, 32, 32, 3], int64 [10000]
"""

from __future__ import annotations

import glob
import os
from typing import Callable, Sequence

import numpy as np

from drojax.data.errors import DataNotFoundError

NUM_SEVERITIES = 5
DEFAULT_TFDS_DIR = os.path.join("~", "tensorflow_datasets")
TFDS_NAME = "cifar10_corrupted"
# Our names (drojax.corruptions.NAMES) -> tfds cifar10_corrupted's names.
TFDS_NAMES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}
ARCHIVES = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/record/3555552/files/CIFAR-100-C.tar"),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

Loader = Callable[[str, int], tuple[np.ndarray, np.ndarray]]


def _check_name(name: str) -> str:
  from drojax.corruptions import tables

  if name not in tables.NAMES:
    raise ValueError(f"corruption name must be one of {tables.NAMES}; got {name!r}.")
  return name


def _check_severity(severity) -> int:
  if (not isinstance(severity, (int, np.integer)) or isinstance(severity, bool)
      or not 1 <= severity <= NUM_SEVERITIES):
    raise ValueError(f"severity must be an int in 1..{NUM_SEVERITIES}; got {severity!r}.")
  return int(severity)


def _check_dataset(dataset: str) -> str:
  if dataset not in ARCHIVES:
    raise ValueError(f"dataset must be one of {sorted(ARCHIVES)}; got {dataset!r}.")
  return dataset


def how_to_supply(dataset: str) -> str:
  """The instructions printed when the published arrays are missing."""
  dirname, url = ARCHIVES[_check_dataset(dataset)]
  text = (f"Download {dirname}.tar ({url}, ~2.7 GB) and extract it so that DIR/{dirname}/ "
          "holds <corruption>.npy and labels.npy, then pass --data_dir=DIR (in Python: "
          f"make_loader('{dataset}', folder='DIR/{dirname}'))")
  if dataset == "cifar10":
    text += (f", or prepare tfds '{TFDS_NAME}' as ArrayRecord in a tfds data dir (needs "
             "TensorFlow to prepare) and pass that data dir")
  return text + ". Or evaluate on generated corruptions instead (--eval_corruptions=generated)."


# ------------------------------------------------------------------------------- folder layout


def resolve_folder(folder: str, dataset: str = "cifar10") -> str | None:
  """The directory holding ``labels.npy``: ``folder`` itself or ``folder/CIFAR-10-C`` (etc.)."""
  dirname, _ = ARCHIVES[_check_dataset(dataset)]
  folder = os.path.expanduser(folder)
  for cand in (folder, os.path.join(folder, dirname)):
    if os.path.isfile(os.path.join(cand, "labels.npy")):
      return cand
  return None


def _load_npy(path: str) -> np.ndarray:
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except (ValueError, EOFError, OSError) as e:  # empty, truncated or pickled content
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    raise ValueError(f"{path}: not a readable .npy array ({size} bytes; "
                     f"{type(e).__name__}: {e or 'no data'}). Extract it again from the "
                     "published archive.") from None


def load_folder(folder: str, name: str, severity: int, *, dataset: str = "cifar10",
                num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """One corruption at one severity from the Hendrycks ``.npy`` folder layout.

  Rows ``(severity - 1) * n .. severity * n - 1`` of ``<name>.npy``, where ``n`` is a fifth
  of its rows.

  Args:
    folder: the extracted ``CIFAR-10-C`` / ``CIFAR-100-C`` folder, or its parent.
    name: a corruption in ``drojax.corruptions.NAMES`` (file ``<name>.npy``).
    severity: 1..5.
    dataset: ``'cifar10'`` or ``'cifar100'`` (the sub-folder name and the label range).
    num_classes: label range to check (default from ``dataset``).

  Returns:
    ``(images uint8 [n, H, W, 3], labels int64 [n])``.

  Raises:
    DataNotFoundError: the folder or the file is missing.
    ValueError: a malformed file (dtype, shape, row count, labels out of range).

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> np.save(f"{d}/fog.npy", np.zeros((10, 4, 4, 3), np.uint8))
    >>> np.save(f"{d}/labels.npy", np.arange(10) % 2)
    >>> x, y = load_folder(d, "fog", 2)
    >>> x.shape, y.tolist()
    ((2, 4, 4, 3), [0, 1])
  """
  _check_name(name)
  severity = _check_severity(severity)
  _check_dataset(dataset)
  root = resolve_folder(folder, dataset)
  if root is None:
    dirname, _ = ARCHIVES[dataset]
    raise DataNotFoundError(f"{dirname} (published)",
                            [os.path.join(folder, "labels.npy"),
                             os.path.join(folder, dirname, "labels.npy")],
                            how_to_supply(dataset))
  path = os.path.join(root, f"{name}.npy")
  if not os.path.isfile(path):
    present = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "*.npy"))
                     if os.path.basename(p) != "labels.npy")
    raise DataNotFoundError(f"{ARCHIVES[dataset][0]} {name}", [path],
                            f"The folder holds {present}; add {name}.npy from the published "
                            f"archive ({ARCHIVES[dataset][1]}).")
  images = _load_npy(path)
  labels = _load_npy(os.path.join(root, "labels.npy"))
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{path}: expected uint8 [N, H, W, 3]; got {images.dtype} "
                     f"{images.shape}.")
  total = images.shape[0]
  if total % NUM_SEVERITIES:
    raise ValueError(f"{path}: {total} rows is not {NUM_SEVERITIES} severities of equal size "
                     "(the published files have 50000 = 5 x 10000).")
  n = total // NUM_SEVERITIES
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.shape[0] not in (
      total, n):
    raise ValueError(f"{os.path.join(root, 'labels.npy')}: expected integer labels of length "
                     f"{total} (or {n}); got {labels.dtype} {labels.shape}.")
  sl = slice((severity - 1) * n, severity * n)
  x = np.asarray(images[sl])
  y = np.asarray(labels[sl] if labels.shape[0] == total else labels, np.int64)
  k = NUM_CLASSES[dataset] if num_classes is None else num_classes
  if y.size and (y.min() < 0 or y.max() >= k):
    raise ValueError(f"{os.path.join(root, 'labels.npy')}: labels must be in 0..{k - 1}; got "
                     f"range {y.min()}..{y.max()}.")
  return x, y


# ------------------------------------------------------------------------------- tfds


def tfds_config(name: str, severity: int) -> str:
  """The ``cifar10_corrupted`` config of a corruption and severity.

  >>> tfds_config("glass_blur", 3)
  'frosted_glass_blur_3'
  """
  _check_name(name)
  return f"{TFDS_NAMES.get(name, name)}_{_check_severity(severity)}"


def tfds_prepared(name: str, severity: int, *, data_dir: str | None = None) -> str | None:
  """The prepared ``cifar10_corrupted/<config>`` directory under ``data_dir``, or None.

  Only the file system is looked at (no tfds call, no network).
  """
  root = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR)
  cfg_dir = os.path.join(root, TFDS_NAME, tfds_config(name, severity))
  hits = glob.glob(os.path.join(cfg_dir, "*", "dataset_info.json"))
  return cfg_dir if hits else None


def load_tfds(name: str, severity: int, *, data_dir: str | None = None,
              split: str = "test") -> tuple[np.ndarray, np.ndarray]:
  """One corruption at one severity of tfds ``cifar10_corrupted`` (prepared, ArrayRecord).

  Args:
    name: a corruption in ``drojax.corruptions.NAMES`` (mapped to tfds's name).
    severity: 1..5.
    data_dir: tfds data dir (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    split: the split (the dataset has only ``'test'``).

  Returns:
    ``(images uint8 [N, 32, 32, 3], labels int64 [N])``.

  Raises:
    DataNotFoundError: not prepared under ``data_dir`` (checked on disk first).
  """
  cfg_dir = tfds_prepared(name, severity, data_dir=data_dir)
  root = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR)
  if cfg_dir is None:
    raise DataNotFoundError(f"{TFDS_NAME}/{tfds_config(name, severity)}",
                            [os.path.join(root, TFDS_NAME, tfds_config(name, severity))],
                            how_to_supply("cifar10"))
  import tensorflow_datasets as tfds

  try:
    source = tfds.data_source(f"{TFDS_NAME}/{tfds_config(name, severity)}", split=split,
                              data_dir=root, download=False)
  except Exception as e:  # noqa: BLE001 - tfds raises many types; name the cause once
    raise DataNotFoundError(
        f"{TFDS_NAME}/{tfds_config(name, severity)}", [cfg_dir],
        f"tfds could not open it as a data source ({type(e).__name__}: {e}); it must be "
        "prepared in ArrayRecord format (file_format='array_record'). " +
        how_to_supply("cifar10")) from None
  n = len(source)
  images, labels = None, np.empty((n,), np.int64)
  for i in range(n):
    rec = source[i]
    img = np.asarray(rec["image"], np.uint8)
    if images is None:
      images = np.empty((n,) + img.shape, np.uint8)
    images[i] = img
    labels[i] = int(rec["label"])
  if images is None:
    images = np.empty((0, 32, 32, 3), np.uint8)
  return images, labels


# ------------------------------------------------------------------------------- one entry


def check_folder(folder: str, names: Sequence[str], *, dataset: str = "cifar10",
                 image_shape: tuple[int, ...] | None = None) -> None:
  """Checks every named corruption file of a Hendrycks folder without reading its pixels.

  All present, each a readable uint8 ``[5 n, H, W, 3]`` array whose file holds all its bytes
  (a truncated file cannot be memory-mapped), ``labels.npy`` of ``5 n`` or ``n`` integers, and
  ``H, W`` equal to ``image_shape``'s when given. For a run to fail before training, not after.

  Raises:
    DataNotFoundError: the folder or any of the files is missing (all missing ones named).
    ValueError: a malformed file, named.

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> np.save(f"{d}/labels.npy", np.arange(10) % 2)
    >>> np.save(f"{d}/fog.npy", np.zeros((10, 4, 4, 3), np.uint8))
    >>> open(f"{d}/snow.npy", "wb").close()
    >>> check_folder(d, ["fog", "snow"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../snow.npy: not a readable .npy array (0 bytes; EOFError: ...
  """
  _check_dataset(dataset)
  names = [_check_name(n) for n in names]
  root = resolve_folder(folder, dataset)
  dirname, archive = ARCHIVES[dataset]
  if root is None:
    raise DataNotFoundError(f"{dirname} (published)",
                            [os.path.join(folder, "labels.npy"),
                             os.path.join(folder, dirname, "labels.npy")],
                            how_to_supply(dataset))
  missing = [n for n in names if not os.path.isfile(os.path.join(root, f"{n}.npy"))]
  if missing:
    raise DataNotFoundError(f"{dirname} {', '.join(missing)}",
                            [os.path.join(root, f"{n}.npy") for n in missing],
                            f"Add the missing files from the published archive ({archive}).")
  labels = _load_npy(os.path.join(root, "labels.npy"))
  for n in names:
    path = os.path.join(root, f"{n}.npy")
    images = _load_npy(path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"{path}: expected uint8 [N, H, W, 3]; got {images.dtype} "
                       f"{images.shape}.")
    total = images.shape[0]
    if total == 0 or total % NUM_SEVERITIES:
      raise ValueError(f"{path}: {total} rows is not {NUM_SEVERITIES} severities of equal size "
                       "(the published files have 50000 = 5 x 10000).")
    if image_shape is not None and tuple(images.shape[1:3]) != tuple(image_shape[:2]):
      raise ValueError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, the model's "
                       f"test images {image_shape[0]}x{image_shape[1]}.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.shape[0] not in (
        total, total // NUM_SEVERITIES):
      raise ValueError(f"{os.path.join(root, 'labels.npy')}: expected integer labels of length "
                       f"{total} (or {total // NUM_SEVERITIES}, as {path}); got {labels.dtype} "
                       f"{labels.shape}.")


def make_loader(dataset: str = "cifar10", *, folder: str | None = None,
                data_dir: str | None = None, names: Sequence[str] | None = None,
                image_shape: tuple[int, ...] | None = None) -> Loader:
  """A ``loader(name, severity) -> (images, labels)`` over the published arrays.

  ``folder`` (the Hendrycks layout) wins when given; otherwise, for CIFAR-10, tfds's prepared
  ``cifar10_corrupted`` under ``data_dir``. The source is checked here, so a run fails before
  evaluating anything if the data is missing: with ``names``, every named corruption (a folder:
  :func:`check_folder`, each file present, readable, complete, of ``image_shape``; tfds: each
  severity prepared), else one corruption's files.

  Args:
    dataset: ``'cifar10'`` or ``'cifar100'``.
    folder: the extracted ``CIFAR-10-C`` / ``CIFAR-100-C`` folder (or its parent).
    data_dir: a tfds data dir (CIFAR-10 only; default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    names: the corruptions that will be loaded (None: not checked one by one).
    image_shape: ``[H, W, C]`` of the model's images (None: not compared).

  Returns:
    The loader, for :func:`drojax.evaluate.published_corruption_accuracy`.

  Raises:
    DataNotFoundError: neither source is present, or a named file is missing (the message says
      where to put the data).
    ValueError: a named file is malformed, empty or truncated (the message names it).
  """
  _check_dataset(dataset)
  dirname, _ = ARCHIVES[dataset]
  looked = []

  def from_folder(f):
    if names is not None:
      check_folder(f, names, dataset=dataset, image_shape=image_shape)
    return lambda name, severity: load_folder(f, name, severity, dataset=dataset)

  if folder is not None:
    if resolve_folder(folder, dataset) is not None:
      return from_folder(folder)
    looked += [os.path.join(folder, "labels.npy"), os.path.join(folder, dirname, "labels.npy")]
  if dataset == "cifar10":
    root = os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR)
    if tfds_prepared("gaussian_noise", 1, data_dir=root) is not None:
      unprepared = [tfds_config(n, s) for n in (names or ()) for s in range(1, NUM_SEVERITIES + 1)
                    if tfds_prepared(n, s, data_dir=root) is None]
      if unprepared:
        raise DataNotFoundError(f"{TFDS_NAME}/{unprepared[0]}",
                                [os.path.join(root, TFDS_NAME, c) for c in unprepared[:5]],
                                f"{len(unprepared)} configs are not prepared; "
                                f"{how_to_supply(dataset)}")
      return lambda name, severity: load_tfds(name, severity, data_dir=root)
    looked.append(os.path.join(root, TFDS_NAME))
    if data_dir is not None and folder is None and resolve_folder(data_dir, dataset):
      # A data dir that holds the extracted archive works too.
      return from_folder(data_dir)
  elif data_dir is not None and folder is None:
    if resolve_folder(data_dir, dataset) is not None:
      return from_folder(data_dir)
    looked.append(os.path.join(data_dir, dirname, "labels.npy"))
  raise DataNotFoundError(f"{dirname} (published)", looked, how_to_supply(dataset))


def write_folder(folder: str, images: np.ndarray, labels: np.ndarray, *, key,
                 names: tuple[str, ...], table: str = "standard", note: str = "",
                 batch_size: int = 250, progress: bool = False) -> None:
  """Corrupts ``images`` with :mod:`drojax.corruptions` and writes them in the Hendrycks layout.

  ``<folder>/<name>.npy`` holds severity 1's images, then 2's, ..., 5's (uint8, rounded from
  the float result), ``labels.npy`` the labels repeated per severity; ``README.txt`` says how
  (``note``). The folder is written under a temporary name and renamed into place, so a killed
  writer never leaves a half-written folder; an existing complete folder is left as it is.

  Args:
    folder: the folder to create.
    images: uint8 ``[N, H, W, C]``; labels: ``[N]``.
    key: the PRNG key; corruption ``c`` (its index in ``names``) at severity ``s`` on batch
      ``b`` uses ``fold_in(fold_in(fold_in(key, c), s), b)``.
    names: the corruptions; table: ``'standard'`` or a refined table of
      :mod:`drojax.corruptions`.
    batch_size: images corrupted per call (memory).
  """
  import shutil

  import jax
  from tqdm import tqdm

  from drojax import corruptions

  if os.path.isfile(os.path.join(folder, "labels.npy")):
    return
  x = np.asarray(images, np.float32) / 255.0
  tmp = f"{folder}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with tqdm(total=len(names) * NUM_SEVERITIES, desc=f"corrupting ({table})",
            disable=not progress) as bar:
    for c, name in enumerate(names):
      per_severity = []
      for severity in range(1, NUM_SEVERITIES + 1):
        fn = jax.jit(lambda k, im, name=name, severity=severity: corruptions.corrupt(
            k, im, name=name, severity=severity, table=table))
        k = jax.random.fold_in(jax.random.fold_in(key, c), severity)
        out = np.concatenate([np.asarray(fn(jax.random.fold_in(k, b), x[s:s + batch_size]))
                              for b, s in enumerate(range(0, len(x), batch_size))])
        per_severity.append(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8))
        bar.update(1)
      np.save(os.path.join(tmp, f"{name}.npy"), np.concatenate(per_severity))
  np.save(os.path.join(tmp, "labels.npy"), np.tile(np.asarray(labels), NUM_SEVERITIES))
  with open(os.path.join(tmp, "README.txt"), "w") as f:
    f.write(f"{len(x)} images corrupted with drojax.corruptions ({table} table), severities "
            f"1..{NUM_SEVERITIES} stacked in order, uint8. {note}\n")
  shutil.rmtree(folder, ignore_errors=True)
  os.replace(tmp, folder)


__all__ = ["NUM_SEVERITIES", "TFDS_NAME", "TFDS_NAMES", "ARCHIVES", "how_to_supply",
           "resolve_folder", "load_folder", "check_folder", "tfds_config", "tfds_prepared",
           "load_tfds", "make_loader", "write_folder"]
