"""Host-side prefetch and placing batches on the device mesh.

``prefetch`` runs a batch iterator in a small background thread so decoding and shuffling on
the host overlap the device step. ``shard_batch`` places a host batch on the mesh, split over
the ``data`` axis (``NamedSharding(mesh, P('data'))``); on several hosts each host passes its
own slice of the global batch (see ``epoch_batches(..., shard_index, num_shards)``).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterable, Iterator

import numpy as np

_END = object()


class _Raised:

  def __init__(self, error: BaseException):
    self.error = error


def prefetch(iterable: Iterable[Any], *, size: int = 2) -> Iterator[Any]:
  """Iterates ``iterable`` in a daemon thread, keeping up to ``size`` items ready.

  Exceptions raised by the producer are re-raised in the consumer. Stopping early (``close()``
  or garbage collection of the generator) stops the producer thread.

  >>> list(prefetch(iter(range(5)), size=2))
  [0, 1, 2, 3, 4]
  """
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}")
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def _put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce():
    try:
      for item in iterable:
        if not _put(item):
          return
      _put(_END)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      _put(_Raised(e))

  thread = threading.Thread(target=_produce, daemon=True, name="drojax-prefetch")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is _END:
        return
      if isinstance(item, _Raised):
        raise item.error
      yield item
  finally:
    stop.set()


def batch_sharding(mesh) -> Any:
  """``NamedSharding(mesh, P('data'))``: the leading (batch) axis split over ``data``."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  return NamedSharding(mesh, P("data"))


def process_shard(mesh) -> tuple[int, int]:
  """``(shard_index, num_shards)`` for ``epoch_batches``: which slice of each global batch is ours.

  ``NamedSharding(mesh, P('data'))`` gives each process the rows of the global batch that its
  devices hold. With ``P`` processes that is one contiguous block of ``B / P`` rows when the
  mesh lists each process's devices together (``drojax.train.make_mesh`` over
  ``jax.devices()`` does); the block's position is the shard index. One process: ``(0, 1)``.

  Raises:
    ValueError: the mesh's ``data`` axis interleaves processes' devices, or does not hold the
      same number of devices from every process.
  """
  import jax

  devices = list(mesh.devices.flat)
  owners = [d.process_index for d in devices]
  blocks = [p for i, p in enumerate(owners) if i == 0 or owners[i - 1] != p]
  count = len(set(owners))
  per = len(owners) // count
  if (len(blocks) != count or any(owners.count(p) != per for p in blocks)
      or jax.process_index() not in blocks):
    raise ValueError(f"the mesh's data axis must hold the devices of each process together, as "
                     f"many from each (one contiguous slice of the batch per process); its "
                     f"devices belong to processes {owners}")
  return blocks.index(jax.process_index()), count


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, Any]:
  """Places a host batch on ``mesh``, its leading axis split over the ``data`` axis.

  Args:
    batch: dict of host arrays, each ``[b, ...]``; on one host ``b`` is the global batch, on
      several hosts it is this host's slice of it.
    mesh: a ``jax.sharding.Mesh`` with a ``data`` axis.

  Returns:
    The same dict of global ``jax.Array``s sharded with ``NamedSharding(mesh, P('data'))``.

  Raises:
    ValueError if the batch is not divisible by the devices it is split over.
  """
  import jax

  sharding = batch_sharding(mesh)
  n_local = len(mesh.local_devices) if jax.process_count() > 1 else mesh.shape["data"]
  for k, v in batch.items():
    if v.shape[0] % n_local:
      raise ValueError(
          f"batch['{k}'] has {v.shape[0]} examples, not divisible by the {n_local} devices of "
          "the mesh's 'data' axis; choose a batch size that is a multiple of the device count")
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def device_batches(batches: Iterable[dict[str, np.ndarray]], mesh, *,
                   prefetch_size: int = 2) -> Iterator[dict[str, Any]]:
  """Prefetches host batches in a thread and places each on ``mesh`` (see ``shard_batch``)."""
  for batch in prefetch(batches, size=prefetch_size):
    yield shard_batch(batch, mesh)
