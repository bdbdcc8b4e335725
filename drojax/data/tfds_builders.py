"""CIFAR-10/100 through tensorflow-datasets without TensorFlow.

tfds's own ``cifar10`` builder needs TensorFlow to prepare its data. The builders here parse
the official binary archives (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``: records
of label byte(s) + 3072 pixel bytes in CHW order) with NumPy, verify them against their SHA-256
checksums, and write ArrayRecord files that ``tfds.data_source`` reads without TensorFlow.
Nothing read from an archive is unpickled or executed.

``load_cifar`` looks, in order and without touching the network, for
  1. ``{data_dir}/{name}_{split}.npz`` (uint8 images + labels, e.g. ``/work/shared/data``),
  2. prepared ``drojax_{name}`` data in the tfds data dir (``data_dir`` or
     ``~/tensorflow_datasets``), then tfds's own ``{name}`` prepared as ArrayRecord,
  3. the official binary archive in ``data_dir``, ``{data_dir}/downloads/manual`` or the
     current directory, which it verifies and prepares,
and downloads the archive only when asked to (``download=True``) and the host is reachable.
Otherwise it raises one ``DataNotFoundError`` saying where it looked and how to supply the data:
never tfds's multi-minute offline retry loop.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tarfile
from typing import Iterator

import numpy as np

from drojax.data.arrays import ArrayDataset, load_npz
from drojax.data.errors import DataNotFoundError

import tensorflow_datasets as tfds  # noqa: E402  (imported after the pure helpers' deps)

_IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 32 * 32 * 3
DEFAULT_TFDS_DIR = os.path.join("~", "tensorflow_datasets")


def parse_cifar_records(data: bytes, *, label_bytes: int, label_index: int,
                        name: str = "cifar") -> tuple[np.ndarray, np.ndarray]:
  """Parses CIFAR binary records into ``(images [N, 32, 32, 3] uint8, labels [N] int64)``.

  Args:
    data: the bytes of one ``.bin`` file: ``N`` records of ``label_bytes`` + 3072 bytes.
    label_bytes: 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine).
    label_index: which label byte is the label (CIFAR-100 fine labels: 1).
    name: the file's name for error messages.

  >>> rec = bytes([7]) + bytes(range(256)) * 12
  >>> images, labels = parse_cifar_records(rec, label_bytes=1, label_index=0)
  >>> images.shape, labels.tolist(), int(images[0, 0, 1, 0])
  ((1, 32, 32, 3), [7], 1)
  """
  record = label_bytes + _PIXELS
  if len(data) == 0 or len(data) % record:
    raise ValueError(f"{name}: {len(data)} bytes is not a whole number of {record}-byte CIFAR "
                     "records (truncated or not a CIFAR binary file)")
  raw = np.frombuffer(data, np.uint8).reshape(-1, record)
  labels = raw[:, label_index].astype(np.int64)
  images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def sha256_of(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB chunks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


class _CifarBinary(tfds.core.GeneratorBasedBuilder):
  """Shared code of the drojax CIFAR builders (subclasses set the class constants)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Parsed from the official binary archive with NumPy."}
  URL = ""
  ARCHIVE = ""
  SHA256 = ""
  PREFIX = ""
  TRAIN_FILES: tuple[str, ...] = ()
  TEST_FILES: tuple[str, ...] = ()
  LABEL_BYTES = 1
  LABEL_INDEX = 0
  NUM_CLASSES = 10
  # Tests point this at a tiny archive (with its own checksum) instead of the real one.
  archive_override: tuple[str, str] | None = None

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=_IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "id": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    )

  def _archive(self, dl_manager) -> str:
    if self.archive_override is not None:
      path, digest = self.archive_override
    else:
      manual = getattr(dl_manager, "_manual_dir", None)
      candidate = os.path.join(os.fspath(manual), self.ARCHIVE) if manual else None
      if candidate and os.path.isfile(candidate):
        path = candidate
      else:
        path = os.fspath(dl_manager.download(self.URL))
      digest = self.SHA256
    actual = sha256_of(path)
    if actual != digest:
      raise ValueError(f"{path}: SHA-256 {actual} does not match the expected {digest} "
                       "(corrupt or a different file); delete it and supply the official "
                       f"{self.ARCHIVE}")
    return path

  def _split_generators(self, dl_manager):
    archive = self._archive(dl_manager)
    return {
        "train": self._generate_examples(archive, self.TRAIN_FILES),
        "test": self._generate_examples(archive, self.TEST_FILES),
    }

  def _generate_examples(self, archive: str, members: tuple[str, ...]) -> Iterator:
    index = 0
    # Members are read into memory with extractfile; nothing is written to disk from the tar.
    with tarfile.open(archive, "r:gz") as tar:
      for member in members:
        full = self.PREFIX + member
        try:
          f = tar.extractfile(full)
        except KeyError:
          raise ValueError(f"{archive}: member {full} is missing") from None
        if f is None:
          raise ValueError(f"{archive}: member {full} is not a regular file")
        images, labels = parse_cifar_records(
            f.read(), label_bytes=self.LABEL_BYTES, label_index=self.LABEL_INDEX,
            name=f"{archive}:{full}")
        for image, label in zip(images, labels):
          yield index, {"image": image, "label": label, "id": index}
          index += 1


class DrojaxCifar10(_CifarBinary):
  """CIFAR-10 (50,000 train / 10,000 test, 10 classes), TF-free."""

  URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
  ARCHIVE = "cifar-10-binary.tar.gz"
  SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
  PREFIX = "cifar-10-batches-bin/"
  TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
  TEST_FILES = ("test_batch.bin",)
  LABEL_BYTES = 1
  LABEL_INDEX = 0
  NUM_CLASSES = 10


class DrojaxCifar100(_CifarBinary):
  """CIFAR-100 fine labels (50,000 train / 10,000 test, 100 classes), TF-free."""

  URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
  ARCHIVE = "cifar-100-binary.tar.gz"
  SHA256 = "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"
  PREFIX = "cifar-100-binary/"
  TRAIN_FILES = ("train.bin",)
  TEST_FILES = ("test.bin",)
  LABEL_BYTES = 2
  LABEL_INDEX = 1
  NUM_CLASSES = 100


BUILDERS = {"cifar10": DrojaxCifar10, "cifar100": DrojaxCifar100}


def read_data_source(source, *, num_classes: int, name: str,
                     chunk: int = 4096) -> ArrayDataset:
  """Reads a tfds random-access data source of ``{image, label[, id]}`` into memory."""
  n = len(source)
  images = np.empty((n,) + _IMAGE_SHAPE, np.uint8)
  labels = np.empty((n,), np.int64)
  ids = np.arange(n, dtype=np.int64)
  for start in range(0, n, chunk):
    idx = list(range(start, min(n, start + chunk)))
    try:
      records = source.__getitems__(idx)
    except (AttributeError, TypeError):  # sources without batched reads (and tfds's mock)
      records = [source[i] for i in idx]
    for j, rec in zip(idx, records):
      images[j] = np.asarray(rec["image"], np.uint8).reshape(_IMAGE_SHAPE)
      labels[j] = int(rec["label"])
      if "id" in rec and np.issubdtype(np.asarray(rec["id"]).dtype, np.integer):
        ids[j] = int(rec["id"])
  if len(np.unique(ids)) != n:
    ids = np.arange(n, dtype=np.int64)
  return ArrayDataset.create(images, labels, num_classes=num_classes, ids=ids, name=name)


def read_prepared(builder: tfds.core.DatasetBuilder, split: str, *, num_classes: int,
                  name: str) -> ArrayDataset:
  """Reads ``split`` of a prepared (ArrayRecord) tfds builder through ``as_data_source``."""
  source = builder.as_data_source(split=split)
  return read_data_source(source, num_classes=num_classes, name=name)


def _has_info(path) -> bool:
  # Checked before ``is_prepared``, which logs a warning for every missing variant folder.
  return os.path.isfile(os.path.join(os.fspath(path), "dataset_info.json"))


def _reachable(url: str, timeout: float = 3.0) -> bool:
  from urllib.parse import urlparse

  host = urlparse(url).hostname
  try:
    with socket.create_connection((host, 443), timeout=timeout):
      return True
  except OSError:
    return False


def how_to_supply(name: str, tfds_dir: str) -> str:
  cls = BUILDERS[name]
  return (f"Supply it with --data_dir=DIR holding {name}_train.npz/{name}_test.npz (uint8 "
          f"images + labels) or the official {cls.ARCHIVE} ({cls.URL}), or a prepared tfds dir "
          f"(drojax_{name} under {tfds_dir}), or pass --dataset=npz:PATH; on a machine with "
          "internet add --download to fetch and verify the archive.")


def load_cifar(name: str, split: str, *, data_dir: str | None = None,
               download: bool = False) -> ArrayDataset:
  """CIFAR-10/100 ``split`` as uint8 ``[N, 32, 32, 3]``; see the module docstring for the search.

  Raises:
    DataNotFoundError: nothing found locally (and no download asked or possible).
  """
  if name not in BUILDERS:
    raise ValueError(f"name must be one of {sorted(BUILDERS)}, got {name!r}")
  if split not in ("train", "test"):
    raise ValueError(f"{name} split must be 'train' or 'test', got {split!r}")
  cls = BUILDERS[name]
  looked = []
  if data_dir:
    npz = os.path.join(data_dir, f"{name}_{split}.npz")
    if os.path.isfile(npz):
      return load_npz(npz, num_classes=cls.NUM_CLASSES, name=f"{name}/{split}")
    looked.append(npz)
  tfds_dir = os.path.expanduser(data_dir or DEFAULT_TFDS_DIR)
  builder = cls(data_dir=tfds_dir)
  if _has_info(builder.data_path) and builder.is_prepared():
    return read_prepared(builder, split, num_classes=cls.NUM_CLASSES, name=f"{name}/{split}")
  looked.append(os.fspath(builder.data_path))
  # tfds's own builder, if someone prepared it as ArrayRecord (it needs TensorFlow to do so).
  try:
    own = tfds.builder(name, data_dir=tfds_dir)
    own_prepared = _has_info(own.data_path) and own.is_prepared() and own.info.file_format == (
        tfds.core.file_adapters.FileFormat.ARRAY_RECORD)
  except Exception:  # noqa: BLE001 - a missing/broken registration only means "not there"
    own_prepared = False
  if own_prepared:
    return read_prepared(own, split, num_classes=cls.NUM_CLASSES, name=f"{name}/{split}")
  archive_dirs = [d for d in (data_dir, os.path.join(tfds_dir, "downloads", "manual"), ".")
                  if d]
  for directory in archive_dirs:
    path = os.path.join(directory, cls.ARCHIVE)
    looked.append(path)
    if os.path.isfile(path):
      builder.download_and_prepare(
          file_format="array_record",
          download_config=tfds.download.DownloadConfig(manual_dir=directory))
      return read_prepared(builder, split, num_classes=cls.NUM_CLASSES, name=f"{name}/{split}")
  if download and _reachable(cls.URL):
    builder.download_and_prepare(file_format="array_record")
    return read_prepared(builder, split, num_classes=cls.NUM_CLASSES, name=f"{name}/{split}")
  how = how_to_supply(name, tfds_dir)
  if download:
    how = f"Could not reach {cls.URL} (offline?). " + how
  raise DataNotFoundError(name, looked, how)
