"""Evaluation across processes: which batches a process evaluates, and the sums over processes
that turn every process's counts into the whole test set's.

A multi-process run (``jax.distributed``) splits each pass over the test set by batch: batch
``b`` goes to process ``b mod P``, with the key, padding and shape a single-process run gives
it, so every batch's verdicts are the single-process ones and the accuracies equal the
single-process run's. The per-batch counts (per corruption x severity, per eps, the suite's
survivors) are summed over the processes with JAX's
``jax.experimental.multihost_utils.process_allgather``; so every process must make the same
evaluation calls in the same order, with the same :class:`Share`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Share:
  """This process's share of every evaluation pass: batches ``index, index + count, ...``.

  Attributes:
    index: this process's index (``jax.process_index()``).
    count: the number of processes (``jax.process_count()``).

  Example:
    >>> list(Share(1, 3).mine(8))
    [1, 4, 7]
  """

  index: int = 0
  count: int = 1

  def __post_init__(self):
    if not (isinstance(self.count, int) and isinstance(self.index, int)
            and 0 <= self.index < self.count):
      raise ValueError(f"Share needs integers 0 <= index < count; got index={self.index!r}, "
                       f"count={self.count!r}.")

  def mine(self, num_batches: int) -> range:
    """The indices of the batches (of ``num_batches``) this process evaluates."""
    return range(self.index, num_batches, self.count)

  def total(self, local: np.ndarray) -> np.ndarray:
    """``local`` (integers, any shape) summed over the processes; ``local`` itself alone.

    A collective: every process calls it with an array of the same shape.
    """
    local = np.asarray(local)
    if self.count == 1:
      return local
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(local.astype(np.int32)))
    return gathered.astype(np.int64).sum(axis=0)


ALONE = Share()  # one process evaluates every batch


def this_process() -> Share:
  """This process's share in the current ``jax.distributed`` job (``ALONE`` outside one).

  Returns:
    ``Share(jax.process_index(), jax.process_count())``.

  Example:
    >>> this_process()  # a single process
    Share(index=0, count=1)
  """
  import jax

  return Share(jax.process_index(), jax.process_count())


__all__ = ["ALONE", "Share", "this_process"]
