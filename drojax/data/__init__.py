"""Data: in-memory datasets, loaders (digits, .npz, Fashion-MNIST, Waterbirds, tfds), batching.

Images are uint8 NHWC at this boundary; the train step converts them to float32 in [0, 1].
Batches are dicts ``{image [B, H, W, C] uint8, label [B] int32, id [B] int32}`` (plus ``group``
and ``environment`` where the dataset has them; the group-shift benchmarks of
``drojax.data.group_shift`` do). This package is an I/O module: it reads files, nothing else in
``drojax`` does.

Main entry points:
  ``ArrayDataset``, ``epoch_batches`` (deterministic from ``(seed, epoch)``), ``num_batches``,
  ``load_npz``, ``load_digits``, ``load_fashion_mnist``, ``load_waterbirds``,
  ``load_dataset(name, split, ...)`` (CIFAR through ``drojax.data.tfds_builders``), ``prefetch``,
  ``shard_batch`` / ``device_batches`` (placing batches sharded on the mesh), ``process_rows``
  (this process's rows of each global batch).
"""

from drojax.data.arrays import (
    ArrayDataset,
    balanced_indices,
    epoch_batches,
    epoch_permutation,
    load_npz,
    num_batches,
)
from drojax.data.digits import load_digits
from drojax.data.errors import DataError, DataNotFoundError
from drojax.data.fashion_mnist import load_fashion_mnist
from drojax.data.pipeline import (
    batch_sharding,
    device_batches,
    prefetch,
    process_rows,
    shard_batch,
)
from drojax.data.registry import DATASETS, load_dataset
from drojax.data.waterbirds import load_waterbirds

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "balanced_indices",
    "DataError",
    "DataNotFoundError",
    "batch_sharding",
    "device_batches",
    "epoch_batches",
    "epoch_permutation",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_npz",
    "load_waterbirds",
    "num_batches",
    "prefetch",
    "process_rows",
    "shard_batch",
]
