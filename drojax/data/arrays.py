"""In-memory datasets and deterministic epoch batching.

Images are uint8 NHWC at this data boundary; the train step converts them to float32 in [0, 1].
Every batch carries the example ids (Var-DRO tracks per-example loss statistics by id).

Shuffling is a pure function of ``(seed, epoch)``: a run resumed at ``(epoch, start_batch)``
sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from drojax.data.errors import DataError


# Labels are stored as int32; a larger class count is a typo or a stray label.
_MAX_CLASSES = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """A labelled image dataset held in host memory.

  Attributes:
    images: ``[N, H, W, C]`` uint8 in 0..255.
    labels: ``[N]`` int32 in ``[0, num_classes)``.
    ids: ``[N]`` int32 example ids, unique within the dataset (default ``arange(N)``).
    num_classes: number of classes ``K``.
    groups: optional ``[N]`` int32 group ids (e.g. Waterbirds ``2 * y + place``).
    name: a short name used in messages and results.
    environments: optional ``[N]`` int32 environment ids (the training environments of
      V-REx / IRM, e.g. Colored MNIST's two colour-flip rates).

  Example:
    >>> ds = ArrayDataset.create(np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1]),
    ...                          num_classes=2, name="toy")
    >>> len(ds), ds.image_shape, ds.ids.tolist()
    (4, (8, 8, 3), [0, 1, 2, 3])
  """

  images: np.ndarray
  labels: np.ndarray
  ids: np.ndarray
  num_classes: int
  groups: np.ndarray | None = None
  name: str = "arrays"
  environments: np.ndarray | None = None

  @classmethod
  def create(
      cls,
      images: np.ndarray,
      labels: np.ndarray,
      *,
      num_classes: int | None = None,
      ids: np.ndarray | None = None,
      groups: np.ndarray | None = None,
      name: str = "arrays",
      environments: np.ndarray | None = None,
  ) -> "ArrayDataset":
    """Validates and converts arrays (labels/ids/groups to int32) into an ``ArrayDataset``.

    Args:
      images: ``[N, H, W, C]`` uint8.
      labels: ``[N]`` integer labels.
      num_classes: number of classes; default ``max(labels) + 1``.
      ids: ``[N]`` integer example ids; default ``arange(N)``.
      groups: optional ``[N]`` integer group ids.
      name: the dataset's name, used in error messages.
      environments: optional ``[N]`` integer environment ids.

    Raises:
      ValueError / TypeError naming the offending array, what was expected and what was received.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8:
      raise TypeError(f"{name}: images must be uint8 NHWC in 0..255, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(
          f"{name}: images must have shape [N, H, W, C] with C in (1, 3), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
      raise ValueError(
          f"{name}: labels must have shape [N] = [{images.shape[0]}], got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
      raise TypeError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    n = images.shape[0]
    if num_classes is None:
      num_classes = int(labels.max()) + 1 if n else 0
    if n and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(
          f"{name}: labels must lie in [0, {num_classes}), got range "
          f"[{labels.min()}, {labels.max()}]")
    if n and num_classes < 2:
      raise ValueError(f"{name}: a classifier needs at least 2 classes, got {num_classes} (every "
                       f"label is {labels.min()}); add examples of another class, or declare "
                       "the classes with a 'num_classes' key")
    if num_classes > _MAX_CLASSES:
      raise ValueError(f"{name}: num_classes must be <= {_MAX_CLASSES} (labels are int32), got "
                       f"{num_classes}")
    if ids is None:
      ids = np.arange(n, dtype=np.int32)
    ids = np.asarray(ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"{name}: ids must be integers of shape [{n}], got {ids.dtype} {ids.shape}")
    if len(np.unique(ids)) != n:
      raise ValueError(f"{name}: ids must be unique")
    groups, environments = (_optional_ids(name, what, v, n) for what, v in
                            (("groups", groups), ("environments", environments)))
    return cls(images=images, labels=labels.astype(np.int32), ids=ids.astype(np.int32),
               num_classes=int(num_classes), groups=groups, name=name,
               environments=environments)

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)``."""
    return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

  def take(self, indices: np.ndarray | slice) -> "ArrayDataset":
    """The sub-dataset at ``indices`` (ids, groups and environments follow the examples)."""
    return dataclasses.replace(
        self, images=self.images[indices], labels=self.labels[indices], ids=self.ids[indices],
        groups=None if self.groups is None else self.groups[indices],
        environments=None if self.environments is None else self.environments[indices])

  def subset(self, n: int | None, *, seed: int = 0) -> "ArrayDataset":
    """A fixed random subset of ``n`` examples (all when ``n`` is None or >= len)."""
    if n is None or n >= len(self):
      return self
    if n <= 0:
      raise ValueError(f"subset size must be positive, got {n}")
    order = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
    return self.take(order)


def _optional_ids(name: str, what: str, values, n: int) -> np.ndarray | None:
  if values is None:
    return None
  values = np.asarray(values)
  if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
    raise ValueError(
        f"{name}: {what} must be integers of shape [{n}], got {values.dtype} {values.shape}")
  return values.astype(np.int32)


def balanced_indices(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
  """Sorted indices of ``n`` examples, ``n // K`` of each of the ``K`` classes present in
  ``labels``, drawn without replacement by ``seed`` (a fixed class-balanced test subset).

  >>> balanced_indices(np.array([0, 1, 0, 1, 0, 1]), 4, seed=0).tolist()
  [1, 2, 4, 5]
  """
  classes = np.unique(labels)
  per = n // len(classes)
  if per < 1:
    raise ValueError(f"n={n} is fewer than the {len(classes)} classes")
  rng = np.random.default_rng(seed)
  picks = []
  for c in classes:
    idx = np.flatnonzero(labels == c)
    if len(idx) < per:
      raise ValueError(f"class {c} has {len(idx)} examples, fewer than the {per} asked for")
    picks.append(rng.choice(idx, per, replace=False))
  return np.sort(np.concatenate(picks))


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Number of batches in one epoch.

  >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=False)
  (2, 3)
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
  """The example order of ``epoch``: a permutation that depends only on ``(seed, epoch)``.

  >>> (epoch_permutation(5, seed=0, epoch=1) == epoch_permutation(5, seed=0, epoch=1)).all()
  np.True_
  """
  if seed < 0 or epoch < 0:
    raise ValueError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}")
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def epoch_batches(
    dataset: ArrayDataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    drop_remainder: bool = True,
    shuffle: bool = True,
    shard_index: int = 0,
    num_shards: int = 1,
    rows: np.ndarray | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields one epoch's batches as dicts ``{image, label, id}`` (+ ``group``, ``environment``).

  Args:
    dataset: the examples.
    batch_size: the GLOBAL batch size ``B``.
    seed: shuffling seed; the order is a function of ``(seed, epoch)`` only.
    epoch: the epoch number (0-based).
    start_batch: skip the first ``start_batch`` batches (resuming mid-epoch).
    drop_remainder: drop the last partial batch (training); keep it for evaluation.
    shuffle: False keeps the dataset order (evaluation).
    shard_index: this host's index (``jax.process_index()``) in multi-host runs.
    num_shards: number of hosts; each host yields its contiguous ``B / num_shards`` slice of
      every global batch.
    rows: instead of a shard, the positions in ``[0, B)`` of the rows of every global batch
      this host yields, ascending (``drojax.data.process_rows(mesh, B)``: those its devices
      hold, contiguous or not).

  Yields:
    ``image`` ``[b, H, W, C]`` uint8, ``label`` ``[b]`` int32, ``id`` ``[b]`` int32 and, when the
    dataset has them, ``group`` and ``environment`` ``[b]`` int32, with ``b = B / num_shards``
    (``len(rows)``).

  Example:
    >>> ds = ArrayDataset.create(np.zeros((10, 2, 2, 1), np.uint8), np.arange(10) % 2)
    >>> [b["id"].shape for b in epoch_batches(ds, batch_size=4, seed=0, epoch=0)]
    [(4,), (4,)]
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_shards <= 0 or not 0 <= shard_index < num_shards:
    raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index}, {num_shards}")
  if batch_size % num_shards:
    raise ValueError(
        f"batch_size {batch_size} is not divisible by the number of hosts {num_shards}")
  if start_batch < 0:
    raise ValueError(f"start_batch must be non-negative, got {start_batch}")
  if rows is not None:
    rows = np.asarray(rows)
    if num_shards > 1:
      raise ValueError("pass rows or shard_index/num_shards, not both")
    if (rows.ndim != 1 or not rows.size or not np.issubdtype(rows.dtype, np.integer)
        or np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= batch_size):
      raise ValueError(f"rows must be ascending distinct positions in [0, {batch_size}), got "
                       f"{rows.tolist()[:8]}")
  n = len(dataset)
  order = (epoch_permutation(n, seed=seed, epoch=epoch) if shuffle
           else np.arange(n))
  per_shard = batch_size // num_shards
  for b in range(start_batch, num_batches(n, batch_size, drop_remainder=drop_remainder)):
    idx = order[b * batch_size:(b + 1) * batch_size]
    if num_shards > 1:
      idx = idx[shard_index * per_shard:(shard_index + 1) * per_shard]
    if rows is not None:
      idx = idx[rows]
    batch = {"image": dataset.images[idx], "label": dataset.labels[idx], "id": dataset.ids[idx]}
    if dataset.groups is not None:
      batch["group"] = dataset.groups[idx]
    if dataset.environments is not None:
      batch["environment"] = dataset.environments[idx]
    yield batch


def _first_missing(present: np.ndarray, limit: int) -> list[int]:
  """The first ``limit`` integers >= 0 absent from the sorted unique ``present``: read from the
  gaps between present values, so memory stays O(len(present)) for any label value."""
  out: list[int] = []
  prev = -1
  for v in present.tolist():
    for m in range(prev + 1, min(v, prev + 1 + limit - len(out))):
      out.append(m)
    if len(out) >= limit:
      break
    prev = v
  return out


def load_npz(path: str, *, num_classes: int | None = None, name: str | None = None) -> ArrayDataset:
  """Loads an ``.npz`` with ``images`` (uint8 NHWC) and ``labels`` (integers); no pickle.

  Optional keys: ``ids`` and ``groups`` (integers ``[N]``) and ``num_classes`` (a scalar int:
  declares the number of classes, so that classes absent from this file are allowed).
  Single-channel images may also be given as ``[N, H, W]``.

  Without a declared ``num_classes`` it is inferred as ``max(labels) + 1``, and every class
  below it must then have an example: a stray label (37 among 0..9) would otherwise make a
  38-way head without a word.

  Args:
    path: the file.
    num_classes: number of classes; default the file's ``num_classes`` key, else inferred.
    name: dataset name for messages; default the path.

  Raises:
    DataError (a ``ValueError``) naming the file and the problem (missing file, not an npz,
    truncated, wrong keys, wrong dtype/shape, no examples, labels out of range or skipping
    classes). Arrays of Python objects are refused
    (``allow_pickle=False``): loading never executes code from the file.
  """
  import zipfile

  name = name or str(path)
  try:
    archive = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise DataError(f"{path}: no such file") from None
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"{path}: not a readable .npz archive ({e})") from None
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataError(f"{path}: expected an .npz archive with keys 'images' and 'labels', "
                    "got a single .npy array")
  with archive:
    keys = set(archive.files)
    missing = {"images", "labels"} - keys
    if missing:
      raise DataError(f"{path}: missing key(s) {sorted(missing)}; found {sorted(keys)}; "
                      "expected 'images' (uint8 [N, H, W, C]) and 'labels' (int [N])")
    arrays = {}
    for key in ("images", "labels", "ids", "groups", "num_classes"):
      if key not in keys:
        continue
      try:
        arrays[key] = archive[key]
      except ValueError as e:  # object arrays need pickle
        raise DataError(f"{path}: key '{key}' could not be read without pickle ({e})") from None
      except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: key '{key}' is truncated or corrupt ({e})") from None
  images, labels = arrays["images"], arrays["labels"]
  if images.ndim == 3:
    images = images[..., None]
  if images.shape[:1] == (0,) or labels.shape[:1] == (0,):
    raise DataError(f"{path}: holds no examples (images {images.shape}, labels {labels.shape})")
  declared = arrays.get("num_classes")
  if declared is not None:
    if declared.shape != () or not np.issubdtype(declared.dtype, np.integer) or declared < 1:
      raise DataError(f"{path}: key 'num_classes' must be a positive integer scalar, got "
                      f"{declared!r}")
    if num_classes is None:
      num_classes = int(declared)
    elif num_classes != int(declared):
      raise DataError(f"{path}: declares num_classes={int(declared)}, expected {num_classes}")
  elif num_classes is None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
    present = np.unique(labels)
    inferred = int(present.max()) + 1
    if present.min() >= 0 and len(present) < inferred:
      missing = _first_missing(present, 8)
      shown = ", ".join(map(str, missing)) + (", ..." if inferred - len(present) > 8 else "")
      raise DataError(f"{path}: labels run up to {inferred - 1}, so {inferred} classes are "
                      f"inferred, but {inferred - len(present)} of them have no example "
                      f"({shown}); fix the labels, or declare the classes with a 'num_classes' "
                      "key in the file")
  try:
    return ArrayDataset.create(images, labels, num_classes=num_classes,
                               ids=arrays.get("ids"), groups=arrays.get("groups"), name=name)
  except (TypeError, ValueError) as e:
    msg = str(e)
    if not msg.startswith(name):
      msg = f"{name}: {msg}"
    raise DataError(msg.replace(f"{name}:", f"{path}:", 1)) from None
