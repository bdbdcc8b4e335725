"""Orbax checkpoints of a run: the train state (with its RNG key) and the data position.

A checkpoint is one step directory written atomically by orbax (to a temporary directory,
renamed when complete), so a run killed mid-save leaves the previous checkpoints intact. It
holds the :class:`drojax.train.TrainState` (parameters, BatchNorm statistics, optimizer state,
step, run key, Var-DRO tracker) and a JSON ``meta`` item with the data position
(``epoch``, ``batch``: the next batch to train on) so a resumed run sees the same batches.
The last ``max_to_keep`` checkpoints are kept. When the latest one cannot be read (corrupt,
truncated), :meth:`Checkpointer.restore_latest` warns and falls back to the previous one.

This is an I/O module: it reads and writes files under its directory.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
import warnings
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from drojax._checks import check_static_int


class Restored(NamedTuple):
  """A restored checkpoint."""

  state: Any  # the TrainState
  step: int  # checkpoint step (= state.step)
  meta: dict[str, Any]  # {"epoch": int, "batch": int, ...} and any user entries


def _os_error_code(e: BaseException) -> int | None:
  """The errno behind a failed write: an ``OSError``'s, or tensorstore's ``os_error_code``."""
  if isinstance(e, OSError) and e.errno:
    return e.errno
  found = re.search(r"os_error_code='?(\d+)", str(e))
  return int(found.group(1)) if found else None


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores train states under ``directory`` (one sub-directory per step).

  Args:
    directory: where checkpoints live (created if missing).
    max_to_keep: how many of the most recent checkpoints to keep (``>= 1``).

  Example:
    >>> ckpt = Checkpointer("/tmp/run/checkpoints", max_to_keep=3)  # doctest: +SKIP
    >>> ckpt.save(state, meta={"epoch": 0, "batch": 10})            # doctest: +SKIP
    >>> restored = ckpt.restore_latest(state)                       # doctest: +SKIP
  """

  def __init__(self, directory: str | os.PathLike[str], *, max_to_keep: int = 3):
    check_static_int("max_to_keep", max_to_keep, minimum=1)
    self.directory = os.path.abspath(os.fspath(directory))
    # Synchronous saves: the train step donates the state, so its buffers must be written
    # before the next step reuses them; saves are rare (every N steps and at epoch ends).
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True))

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints on disk, ascending."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, state: Any, *, meta: dict[str, Any]) -> int:
    """Writes ``state`` and ``meta`` (JSON-serializable) at step ``int(state.step)``.

    Returns the step. Saving a step that already exists is a no-op. A save that fails (disk
    full, file-size limit) removes its temporary directory before the error propagates, so a
    full disk is not left fuller; the previous checkpoints are untouched. A save orbax reports
    as done but did not record raises ``OSError`` (EIO), never a silent success.
    """
    step = int(jax.device_get(state.step))
    if step in self.all_steps():
      return step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))))
      self._manager.wait_until_finished()
    except BaseException as e:
      try:  # orbax's writer threads may still be finishing: let them, then remove
        self._manager.wait_until_finished()
      except Exception:  # noqa: BLE001  (the same failure, already being raised)
        pass
      self._remove_partial(step)
      code = _os_error_code(e)
      if code is not None:  # tensorstore reports a full disk as a ValueError: say it as OSError
        path = os.path.join(self.directory, str(step))
        raise OSError(code, f"saving the checkpoint failed: {os.strerror(code)}", path) from e
      raise
    if step not in self._manager.all_steps():
      # orbax's wait_until_finished joins its finalize thread under ``except BaseException``:
      # a failed finalize (or an interrupt while joining) is logged, the step dropped, and it
      # returns as if the save had succeeded.
      self._remove_partial(step)
      raise OSError(errno.EIO, f"saving the checkpoint failed: orbax did not finish step {step} "
                    "(its log says why)", os.path.join(self.directory, str(step)))
    return step

  def _remove_partial(self, step: int, *, quiet_s: float = 0.3, limit_s: float = 3.0) -> None:
    """Deletes what a failed save of ``step`` left: its orbax temporary directory.

    tensorstore's own threads may still write into it for a moment after the error reaches
    Python (measured: 2 of 8 failed saves had a file re-created after a single removal), so it
    is removed until it has stayed absent for ``quiet_s`` (at most ``limit_s``).
    """
    if jax.process_index() != 0:
      return  # one process owns the directory's contents in a multi-process run
    deadline, quiet_since = time.monotonic() + limit_s, None
    while time.monotonic() < deadline:
      names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
      partial = [n for n in names if n.startswith(f"{step}.") and ".orbax-checkpoint-tmp" in n]
      for name in partial:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      now = time.monotonic()
      quiet_since = (quiet_since or now) if not partial else None
      if quiet_since is not None and now - quiet_since >= quiet_s:
        return
      time.sleep(0.05)

  def restore(self, step: int, target: Any = None) -> Restored:
    """Restores checkpoint ``step`` into the structure (and shardings) of ``target``; with no
    ``target``, the tree as it was saved (dicts of arrays: read the parameters of a run
    without rebuilding its optimizer)."""
    item = None if target is None else _abstract(target)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(item), meta=ocp.args.JsonRestore()))
    return Restored(state=out["state"], step=step, meta=dict(out["meta"] or {}))

  def restore_latest(self, target: Any = None) -> Restored | None:
    """The newest readable checkpoint, or ``None`` when there is none.

    A checkpoint that fails to restore (corrupt or partial files) is skipped with a
    ``RuntimeWarning`` naming it, and the previous one is tried.
    """
    for step in reversed(self.all_steps()):
      try:
        return self.restore(step, target)
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        warnings.warn(f"checkpoint at step {step} in {self.directory} could not be restored "
                      f"({type(e).__name__}: {str(e)[:200]}); falling back to the previous one",
                      RuntimeWarning, stacklevel=2)
    return None

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


__all__ = ["Checkpointer", "Restored"]
