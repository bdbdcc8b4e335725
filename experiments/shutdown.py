"""Ending a CLI process cleanly: Ctrl-C, SIGTERM or a failed write leave one line, no thread
tracebacks.

The tracebacks came from orbax's checkpoint I/O: each save and restore runs as asyncio
coroutines on a fresh event loop (``asyncio_utils.run_sync``), in the calling thread and its
commit threads, awaiting tensorstore writes. When the coroutine ends early (a
``KeyboardInterrupt`` inside ``run_until_complete``, or one write failing on a full disk while
others are in flight), orbax closes the loop at once; the writes still running then deliver
their results to the closed loop (``call_soon_threadsafe``: ``RuntimeError: Event loop is
closed``), and tensorstore prints each as a traceback, when depends on the load (with asyncio's
``Task was destroyed but it is pending!`` for the abandoned tasks).

:func:`install` makes every event loop created afterwards finish its pending tasks before it
closes (at most ``DRAIN_SECONDS``), their exceptions marked as retrieved (the first failure is
reported already), and turns SIGTERM into :class:`Terminated` (a ``KeyboardInterrupt``): a
terminated run ends like an interrupted one, its last checkpoint intact and one line.

Both signals are held back while the main thread is inside orbax and re-sent every
``REDELIVER_SECONDS`` (for at most ``DEFER_SECONDS``) until it leaves: orbax's
``CheckpointManager.wait_until_finished`` joins its finalize thread under ``except BaseException``,
logs, and carries on, so an interrupt raised there was swallowed and the run went on training (seen
under load). A signal's exception that Python drops because it was raised inside a
garbage-collector callback or a ``__del__`` (JAX's ``_xla_gc_callback``: a SIGTERM there was
printed as "Exception ignored" and the worker trained on, seen under load) reaches
``sys.unraisablehook``, which re-sends the signal the same way. CLIs only: it changes process-wide
state (the asyncio loop policy, signal handlers); the library never calls it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

DRAIN_SECONDS = 60.0
REDELIVER_SECONDS = 0.05
DEFER_SECONDS = 120.0


class Terminated(KeyboardInterrupt):
  """SIGTERM arrived (raised in the main thread by the handler :func:`install` sets)."""


class _DrainingLoop(asyncio.SelectorEventLoop):
  """An event loop whose ``close`` first lets its pending tasks finish."""

  def close(self) -> None:
    pending = [] if self.is_closed() or self.is_running() else [
        t for t in asyncio.all_tasks(self) if not t.done()]
    try:
      if pending:
        self.run_until_complete(asyncio.wait(pending, timeout=DRAIN_SECONDS))
    finally:
      for task in pending:
        if task.done() and not task.cancelled():
          task.exception()  # retrieved: the failure that ended the run is reported already
      super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):

  def new_event_loop(self) -> asyncio.AbstractEventLoop:
    return _DrainingLoop()


def _in_orbax(frame) -> bool:
  while frame is not None:
    if frame.f_globals.get("__name__", "").startswith("orbax."):
      return True
    frame = frame.f_back
  return False


class _Deferral:
  """The first moment a signal was held back, whether a re-delivery is pending, and the
  ``sys.unraisablehook`` :func:`install` found."""
  since: float | None = None
  pending = False
  unraisablehook = sys.unraisablehook


def _redeliver(signum: int) -> None:
  _Deferral.pending = False
  os.kill(os.getpid(), signum)


def _redeliver_later(signum: int) -> None:
  if not _Deferral.pending:
    _Deferral.pending = True
    timer = threading.Timer(REDELIVER_SECONDS, _redeliver, (signum,))
    timer.daemon = True
    timer.start()


def _unraisable(unraisable) -> None:
  """The signal's exception was dropped where Python cannot raise (see the module docstring)."""
  if isinstance(unraisable.exc_value, KeyboardInterrupt):
    _redeliver_later(signal.SIGTERM if isinstance(unraisable.exc_value, Terminated)
                     else signal.SIGINT)
  else:
    _Deferral.unraisablehook(unraisable)


def _interrupt(signum, frame) -> None:
  """SIGINT -> ``KeyboardInterrupt``, SIGTERM -> :class:`Terminated`; held back inside orbax."""
  now = time.monotonic()
  if _in_orbax(frame) and now - (_Deferral.since or now) < DEFER_SECONDS:
    _Deferral.since = _Deferral.since or now
    _redeliver_later(signum)
    return
  _Deferral.since = None
  raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> None:
  """Event loops drain before they close; SIGINT raises ``KeyboardInterrupt`` and SIGTERM
  :class:`Terminated` in the main thread, once it is outside orbax, and again if dropped."""
  if not isinstance(asyncio.get_event_loop_policy(), _DrainingPolicy):
    asyncio.set_event_loop_policy(_DrainingPolicy())
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if sys.unraisablehook is not _unraisable:
      _Deferral.unraisablehook, sys.unraisablehook = sys.unraisablehook, _unraisable


__all__ = ["DEFER_SECONDS", "DRAIN_SECONDS", "REDELIVER_SECONDS", "Terminated", "install"]
