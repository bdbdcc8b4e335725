"""How an experiment CLI ends: ``run_main`` parses the flags, runs the CLI's ``main`` and reports
every anticipated error as ONE line on stderr (``prog: error: ...``) naming the flag or file and
what was expected, with no traceback (``--verbose`` or ``DROJAX_VERBOSE=1`` adds it). Exit
status (README, "The paper experiments"): 2 a bad flag, config value or data file
(``UsageError``, ``ConfigError``, ``DataError``, ``DataNotFoundError``); 1 the environment (an
``OSError`` in the cause chain, a download that cannot reach its server, ``EnvironmentFault``,
an unreachable coordinator); 3 a diverged run (``FloatingPointError``, the NaN guard); 130 and
143 Ctrl-C and SIGTERM (``shutdown.Terminated``), the workdir resumable. A bug keeps its
traceback and exits 1. The CLIs' other concerns: ``overrides``, ``flag_defs``, ``launch``,
``help``, ``shutdown``.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from typing import Any, Callable, Sequence

VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "DROJAX_VERBOSE"


class UsageError(Exception):
  """A bad flag, config field or workdir: reported as one line, exit status 2."""


class EnvironmentFault(Exception):
  """The machine, not the command, is at fault (disk, permissions, network): reported as one
  line, exit status 1."""


# errno -> what to tell the user
_OS_ERRORS = {errno.ENOSPC: "no space left on device (disk full)",
              errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted",
              errno.ENOTDIR: "a path component is not a directory",
              errno.EISDIR: "is a directory",
              errno.EEXIST: "already exists",
              errno.ENOENT: "no such file or directory",
              errno.EIO: "input/output error",
              errno.EFBIG: "file too large (file-size limit)"}


def describe_os_error(e: OSError) -> str:
  """A short phrase for ``e`` (its errno), e.g. ``no space left on device (disk full)``."""
  return _OS_ERRORS.get(e.errno, e.strerror or str(e))


def _is_network_error(e: BaseException) -> bool:
  import socket

  module = type(e).__module__ or ""
  return isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)) or (
      isinstance(e, OSError) and module.split(".")[0] in ("urllib", "requests", "urllib3"))


def _os_error_in_chain(e: BaseException | None) -> OSError | None:
  """The first ``OSError`` with a known errno, or a network error (a download that cannot reach
  its server), in ``e``'s cause/context chain (orbax and tfds wrap them)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and (e.errno in _OS_ERRORS or _is_network_error(e)):
      return e
    e = e.__cause__ or e.__context__
  return None


class _QuietOrbaxThreads(logging.Filter):
  """Drops orbax's worker-thread log of a failed save; the same error reaches ``run_main`` as
  an exception and is reported there in one line (``--verbose`` keeps the log).

  Why a filter: orbax (0.12) writes every checkpoint item in a worker thread
  (``_SignalingThread``, ``orbax/checkpoint/_src/futures/future.py``) whose ``run`` logs any
  exception on absl's logger and whose ``join`` re-raises it in the saving thread. orbax cannot
  skip the log, and absl's shared logger's level cannot change for orbax alone. Only ERROR
  records from orbax's files saying a thread "raised an exception" are dropped: the exception
  still arrives in full (a bug keeps its traceback).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and "orbax" in record.pathname
                and "raised an exception" in record.getMessage())


def run_main(main: Callable[[list[str], list[tuple[str, str]]], Any],
             argv: Sequence[str] | None = None, *,
             help_config: Callable[[], Any] | None = None) -> None:
  """Defines the flags ``main`` declares (``flag_defs.uses``), parses ``argv``, runs
  ``main(leftovers, overrides)`` and ends an anticipated error as the module docstring says
  (``SystemExit``). ``-h``/``--help``/``--helpfull`` print ``experiments.help.text`` (exit 0),
  for a CLI that takes ``--config.*`` with the config ``help_config()`` builds from the flags."""
  from drojax import distributed
  from drojax.data import DataError, DataNotFoundError
  from drojax.specs import ConfigError
  from experiments import flag_defs, help as help_lib, launch, overrides as overrides_lib, shutdown

  names, defaults = getattr(main, "flags_used", ((), {}))
  flag_defs.define("import", *names, **defaults)
  argv = list(sys.argv if argv is None else argv)
  if (wanted := help_lib.requested(argv)) is not None:
    # The module run with ``python -m`` (its docstring and flags), else the one defining main.
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    help_lib.print_help(spec.name if spec is not None else main.__module__, argv,
                        full=wanted == "full", config_fn=help_config)
    sys.exit(0)
  prog = os.path.basename(argv[0]) if argv else "drojax"
  verbose = VERBOSE_FLAG in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
  argv = [a for a in argv if a != VERBOSE_FLAG]
  if not verbose:
    logging.getLogger("absl").addFilter(_QuietOrbaxThreads())

  def fail(message: str, status: int) -> None:
    if verbose:
      traceback.print_exc()
    message = ' '.join(str(message).split())
    distributed.leave(status, message)  # a process of a multi-process run: its supervisor says it
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)

  shutdown.install()  # no thread tracebacks after an interrupt or a failed write; SIGTERM
  try:
    leftovers, overrides = flag_defs.parse(argv)
    if len(leftovers) > 1:
      raise UsageError(f"unexpected arguments: {' '.join(leftovers[1:])}")
    launch.maybe_initialize_distributed(prog=prog)
    main(leftovers, overrides)
  except shutdown.Terminated:
    fail("terminated (SIGTERM); the workdir keeps its last checkpoint: rerun the same command to "
         "resume", 143)
  except KeyboardInterrupt:
    fail("interrupted; the workdir keeps its last checkpoint: rerun the same command to resume",
         130)
  except ConfigError as e:
    fail(str(overrides_lib.config_usage_error(e)), 2)
  except (UsageError, DataNotFoundError, DataError) as e:
    fail(str(e), 2)
  except EnvironmentFault as e:
    fail(str(e), 1)
  except FloatingPointError as e:  # drojax.loop.NonFiniteError: training diverged
    fail(str(e), 3)
  except Exception as e:  # noqa: BLE001  (re-raised below unless it is an anticipated OSError)
    os_error = _os_error_in_chain(e)
    if os_error is None:
      # In a multi-process run, first give JAX's runtime the time to tell a dead peer (then
      # that is what is reported); otherwise a bug: keep the traceback.
      distributed.await_peer_failure()
      distributed.print_traceback_and_leave()
      raise
    if os_error.errno not in _OS_ERRORS:  # a network error: data that cannot be reached
      fail(f"network error while fetching data ({type(os_error).__name__}: {os_error}); check "
           "the connection or supply the data locally with --data_dir", 1)
    fail(f"cannot write or read {os_error.filename or 'a file'}: "
         f"{describe_os_error(os_error)}", 1)
