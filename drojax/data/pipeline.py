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


def process_rows(mesh, batch_size: int) -> np.ndarray:
  """The positions in each global batch of ``batch_size`` rows that this process loads.

  Under ``NamedSharding(mesh, P('data'))`` the device at place ``i`` of the data axis holds rows
  ``[i B / n, (i + 1) B / n)``; a process loads the rows of its own devices, ascending (one
  contiguous block when the mesh lists each process's devices together, as
  ``drojax.train.make_mesh`` does on CPU and GPU; interleaved blocks are fine too: ``shard_batch``
  places them with ``jax.make_array_from_process_local_data``). One process: every row.

  Returns:
    ``[B / P]`` int64, ascending (``P`` processes), for ``epoch_batches(..., rows=...)``.

  Raises:
    ValueError: the mesh is not 1-D, ``batch_size`` is not divisible by its size, this process
      has no device on it, or processes hold different numbers of its devices.
  """
  import jax

  devices = np.asarray(mesh.devices)
  if devices.ndim != 1:
    raise ValueError(f"need a 1-D mesh (the data axis), got device shape {devices.shape}")
  n = devices.size
  if batch_size % n:
    raise ValueError(f"batch_size {batch_size} is not divisible by the {n} devices of the mesh")
  owners = [d.process_index for d in devices]
  counts = {p: owners.count(p) for p in owners}
  if jax.process_index() not in counts or len(set(counts.values())) != 1:
    raise ValueError(f"every process must hold as many of the mesh's devices, and this one "
                     f"({jax.process_index()}) some; the devices belong to processes {owners}")
  per = batch_size // n
  return np.concatenate([np.arange(i * per, (i + 1) * per) for i, p in enumerate(owners)
                         if p == jax.process_index()])


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
