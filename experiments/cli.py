"""Shared command-line plumbing of the experiment mains.

* ``split_config_overrides(argv)`` pulls ``--config.<a.b>=VALUE`` out of argv (absl does not
  know these flags); ``apply_overrides`` writes them into a locked ``ConfigDict``, parsing each
  value with the type of the field it replaces, and suggests the closest field on a typo.
* ``run_main`` maps every anticipated error to ONE line on stderr (``prog: error: ...``) naming
  the flag or file and what was expected, with no traceback:

  =====================================================================  ======
  bad flag or config value (``UsageError``, ``ConfigError``), bad or        2
  missing data file (``DataError``, ``DataNotFoundError``)
  environment: workdir not creatable / read-only / not a directory,         1
  disk full, permission denied (``OSError`` anywhere in the cause chain),
  a download that cannot reach its server, ``EnvironmentFault``;
  coordinator unreachable (``maybe_initialize_distributed``)
  training diverged (``FloatingPointError`` from the NaN guard)             3
  Ctrl-C (``KeyboardInterrupt``): the workdir stays resumable             130
  SIGTERM (``shutdown.Terminated``): likewise                             143
  =====================================================================  ======

  ``--verbose`` (or ``DROJAX_VERBOSE=1``) prints the traceback as well. Unanticipated errors
  (bugs) keep their traceback and exit 1.
* ``--import=MODULE[,MODULE...]`` (every CLI): imports a user's modules before the flags are
  read, so the methods they register (``drojax.methods.register``, with their own fields) are
  valid ``--method`` values, checked, recorded and listed in ``--help`` like built-in ones.
* ``enable_compilation_cache``: JAX's persistent compilation cache (CLIs may change
  ``jax.config``; the library never does).
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import os
import sys
import traceback
from typing import Any, Callable, Sequence

import ml_collections
from absl import flags as _flags

from drojax.specs import ConfigError
from experiments.configs import common as _common

PREFIX = "--config."
IMPORT_FLAG = "--import"
VERBOSE_FLAG = "--verbose"
VERBOSE_ENV = "DROJAX_VERBOSE"
# Config fields that CLIs set from their own flags: errors name the flag the user typed.
FLAG_OF_FIELD = {"method": "--method", "dataset": "--dataset", "preset": "--preset",
                 "data_dir": "--data_dir", "download": "--download",
                 "compilation_cache_dir": "--compilation_cache_dir"}
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "drojax", "jax")


_flags.DEFINE_list("import", [], "Modules to import first (comma-separated), e.g. a user's "
                   "module that registers its own methods with drojax.methods.register: "
                   "--import=my_methods makes --method=my_method valid.")


class UsageError(Exception):
  """A bad flag, config field or workdir: reported as one line, exit status 2."""


class EnvironmentFault(Exception):
  """The machine, not the command, is at fault (disk, permissions, network): reported as one
  line, exit status 1."""


def flag_of(field: str) -> str:
  """The flag that sets config ``field``: ``--method`` or ``--config.<field>``."""
  return FLAG_OF_FIELD.get(field, PREFIX + field)


def config_usage_error(e: ConfigError) -> UsageError:
  """A ``ConfigError`` as the one-line usage error naming the flag."""
  return UsageError(f"{flag_of(e.field)}: {e.detail}")


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """Separates ``--config.a.b=v`` (or ``--config.a.b v``) from the other arguments.

  >>> split_config_overrides(["prog", "--config.lr=0.1", "--method=erm"])
  (['prog', '--method=erm'], [('lr', '0.1')])
  """
  rest, overrides = [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith(PREFIX):
      body = arg[len(PREFIX):]
      if "=" in body:
        key, value = body.split("=", 1)
      elif i + 1 < len(args):
        key, value = body, args[i + 1]
        i += 1
      else:
        raise UsageError(f"{arg} needs a value (--config.FIELD=VALUE)")
      overrides.append((key, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def _suggest(name: str, options: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, list(options), n=1)
  return f" Did you mean '{close[0]}'?" if close else ""


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]], *,
                    check_applies: bool = True) -> ml_collections.ConfigDict:
  """Applies ``(dotted_field, text)`` overrides in place; unknown fields raise ``UsageError``.

  Each value is parsed by the field's declared spec (``experiments.configs.common
  .config_specs``): numbers accept ``a/b``, tuples ``1,5`` or ``(1, 5)``. With
  ``check_applies``, an override of a field that the config's method or set-up does not read is
  an error (``common.not_applying``); multi-method CLIs check that across methods instead.
  """
  specs = _common.config_specs(config)
  for dotted, text in overrides:
    node = config
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
      keys = list(node.keys())
      if part not in keys:
        where = ".".join(parts[:depth]) or "config"
        raise UsageError(f"unknown config field '{dotted}' ('{part}' is not in {where})."
                         f"{_suggest(part, keys)}")
      if depth < len(parts) - 1:
        node = node[part]
        if not isinstance(node, ml_collections.ConfigDict):
          raise UsageError(f"config field '{'.'.join(parts[:depth + 1])}' has no sub-fields")
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise UsageError(f"config field '{dotted}' is a group; set one of its fields: "
                       f"{', '.join(current.keys())}")
    if dotted not in specs:
      raise UsageError(f"config field '{dotted}' has no declared check (add a spec next to the "
                       "config factory that defines it)")
    try:
      value = specs[dotted].parse(text)
    except ValueError as e:
      raise UsageError(f"{PREFIX}{dotted}: {e}") from None
    with node.unlocked():
      node[parts[-1]] = value
  if check_applies:
    check_overrides_apply([config], overrides)
  return config


def check_overrides_apply(configs: Sequence[ml_collections.ConfigDict],
                          overrides: Sequence[tuple[str, str]]) -> None:
  """``UsageError`` for an override that no config in ``configs`` reads (see the module doc)."""
  for dotted, _ in overrides:
    reasons = [_common.not_applying(c, dotted) for c in configs]
    if configs and all(reasons):
      which = "" if len(configs) == 1 else " for any of the methods"
      raise UsageError(f"{PREFIX}{dotted} has no effect{which}: {reasons[0]}; drop it")


_SHARED_FLAGS = {
    "workdir": ("string", None, "Run directory (checkpoints, metrics, results; a re-run resumes). "
                "Multi-run CLIs: the root, one sub-directory per run."),
    "preset": ("string", "paper", "paper (the DRO-Augment recipe) | quick (CPU-sized)."),
    "dataset": ("string", "cifar10", "cifar10 | cifar100 | digits | fashion_mnist | "
                "colored_digits | colored_fashion_mnist | dominoes | npz:PATH"),
    "methods": ("string", "erm,dro", "Comma-separated methods to train and compare."),
    "data_dir": ("string", None, "Where to look for data first (default $DROJAX_DATA_DIR)."),
    "download": ("bool", False, "Download CIFAR archives (checksummed) if not found."),
    "compilation_cache_dir": ("string", None, "JAX persistent compilation cache (default "
                              "~/.cache/drojax/jax; 'none' off)."),
}


def define_flags(*names: str, **defaults: Any) -> None:
  """Defines the shared flags ``names`` (one help text everywhere); ``defaults`` replace the
  default of some (``define_flags("methods", methods="erm,kl_dro")``)."""
  for name in names:
    kind, default, help_text = _SHARED_FLAGS[name]
    getattr(_flags, f"DEFINE_{kind}")(name, defaults.get(name, default), help_text)


def check_run_flags(*, preset: bool = True, dataset: bool = True) -> None:
  """``UsageError`` for a bad ``--preset`` or ``--dataset`` (the shared flags)."""
  from drojax.data.registry import validate_name

  if preset:
    check_choice(_flags.FLAGS.preset, _common.PRESETS, "--preset")
  if dataset:
    try:
      validate_name(_flags.FLAGS.dataset)
    except ValueError as e:
      raise UsageError(f"--dataset: {e}") from None


def set_run_fields(config: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """Writes where data and caches are (``data_dir``, ``download``, ``compilation_cache_dir``)
  into ``config``: from ``values``, else from the shared flags where defined; unset ones stay."""
  flag_values = _flags.FLAGS
  with config.unlocked():
    for name in ("data_dir", "download", "compilation_cache_dir"):
      value = values.get(name, flag_values[name].value if name in flag_values else None)
      if value is not None and value != "":
        config[name] = value
  return config


def import_modules(argv: Sequence[str]) -> list[str]:
  """Imports every module named by ``--import=A,B`` (or ``--import A``) in ``argv``.

  A module that is not found is a ``UsageError`` naming it; an error raised while the module
  runs is its own (a bug in it keeps its traceback).
  """
  names = []
  for i, arg in enumerate(argv):
    if arg.startswith(IMPORT_FLAG + "="):
      names += arg[len(IMPORT_FLAG) + 1:].split(",")
    elif arg == IMPORT_FLAG and i + 1 < len(argv):
      names += argv[i + 1].split(",")
  names = [n.strip() for n in names if n.strip()]
  for name in names:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
        raise  # the module itself imports something missing
      raise UsageError(f"{IMPORT_FLAG}: no module named {e.name!r} (a module on PYTHONPATH or "
                       "in the current directory, e.g. --import=my_methods for my_methods.py)"
                       ) from None
  return names


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
  """Raises ``UsageError`` (with a suggestion) unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise UsageError(f"unknown {flag} '{value}'; expected one of {', '.join(choices)}."
                     f"{_suggest(value, choices)}")
  return value


def enable_compilation_cache(cache_dir: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache in ``cache_dir`` ('' or 'none' disables)."""
  import jax

  if not cache_dir or cache_dir.lower() == "none":
    return None
  path = os.path.expanduser(cache_dir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # a read-only home must not stop a run
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return path


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


DISTRIBUTED_TIMEOUT_S = 300  # hosts of one job may start minutes apart (SLURM, TPU VMs)


def _env_int(env: Any, name: str, low: int) -> int | None:
  text = env.get(name, "").strip()
  if not text:
    return None
  if not text.isdigit() or int(text) < low:
    raise UsageError(f"{name} must be an integer >= {low}, got {env[name]!r}")
  return int(text)


def maybe_initialize_distributed(environ: Any = None, *,
                                 prog: str = "drojax") -> bool:
  """Joins the multi-process run when ``DROJAX_DISTRIBUTED=1``; must run before any JAX work.

  Calls ``jax.distributed.initialize()``, which finds the coordinator, process count and id on
  SLURM, Cloud TPU and GKE clusters. Elsewhere set ``JAX_COORDINATOR_ADDRESS=host:port`` (read
  by JAX), ``DROJAX_NUM_PROCESSES`` and ``DROJAX_PROCESS_ID``. ``DROJAX_DISTRIBUTED_TIMEOUT``
  (seconds, default 300) bounds the wait for all processes to join: past it the process prints
  ``PROG: error: ...`` (one line) and exits with status 1. CPU collectives use gloo.

  Returns:
    True when the process joined a distributed run, False when ``DROJAX_DISTRIBUTED`` is unset.

  Raises:
    UsageError: a variable is not an integer (or ``DROJAX_DISTRIBUTED`` not 0/1).
  """
  env = os.environ if environ is None else environ
  flag = env.get("DROJAX_DISTRIBUTED", "").strip().lower()
  if flag in ("", "0", "false"):
    return False
  if flag not in ("1", "true"):
    raise UsageError(f"DROJAX_DISTRIBUTED must be 1 or 0, got {env['DROJAX_DISTRIBUTED']!r}")
  kwargs = {arg: value for name, arg, low in (("DROJAX_NUM_PROCESSES", "num_processes", 1),
                                              ("DROJAX_PROCESS_ID", "process_id", 0))
            if (value := _env_int(env, name, low)) is not None}
  timeout = _env_int(env, "DROJAX_DISTRIBUTED_TIMEOUT", 1) or DISTRIBUTED_TIMEOUT_S
  from drojax import distributed

  if environ is None and not env.get(distributed.SUPERVISOR_ENV):
    # This process supervises the one that joins: see drojax.distributed.supervise.
    sys.exit(distributed.supervise([sys.executable, *sys.orig_argv[1:]], prog=prog))
  distributed.divert_runtime_log()
  import threading

  import jax

  if "jax_cpu_collectives_implementation" in jax.config.values and not env.get(
      "JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = env.get("JAX_COORDINATOR_ADDRESS") or "the auto-detected coordinator"
  who = f"process {kwargs['process_id']}" if "process_id" in kwargs else "this process"

  def give_up(reason: str) -> None:
    print(f"{prog}: error: distributed start-up failed: {who} {reason}; start every process "
          f"with DROJAX_DISTRIBUTED=1, the same JAX_COORDINATOR_ADDRESS (host:port of process 0) "
          f"and DROJAX_NUM_PROCESSES", file=sys.stderr, flush=True)

  # JAX's own timeout aborts the interpreter with a C++ stack trace; this watchdog fires first
  # (the connect call releases the GIL) and ends the process with one line instead.
  def watchdog() -> None:
    give_up(f"could not join all processes through {where} within "
            f"DROJAX_DISTRIBUTED_TIMEOUT={timeout}s")
    os._exit(1)

  timer = threading.Timer(timeout, watchdog)
  timer.daemon = True
  timer.start()
  try:
    # JAX's preemption service would take SIGTERM (a preemption notice for sync points drojax
    # does not use) from the handler experiments.shutdown installs: SIGTERM would do nothing.
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(initialization_timeout=timeout + 60,
                               heartbeat_timeout_seconds=distributed.HEARTBEAT_TIMEOUT_S,
                               **kwargs)
  except (ValueError, TypeError, RuntimeError) as e:
    timer.cancel()
    if "JAX_COORDINATOR_ADDRESS" not in env and "coordinator_address" in str(e):
      give_up("found no cluster to join (SLURM, Cloud TPU, ...) and JAX_COORDINATOR_ADDRESS "
              "is not set")
    else:
      give_up(f"could not start: {' '.join(str(e).split())}")
    sys.exit(1)
  timer.cancel()
  return True


def help_request(argv: Sequence[str]) -> str | None:
  from experiments import help as help_text

  return help_text.requested(argv)


def print_help(module_name: str, argv: Sequence[str], *, full: bool,
               config_fn: Callable[[], Any] | None) -> None:
  """Parses the other flags (they select the config whose defaults are shown) and prints."""
  from absl import flags

  from experiments import help as help_text

  rest, _ = split_config_overrides(help_text.without_help(argv))
  flags.FLAGS.unparse_flags()
  try:
    import_modules(rest)  # the users' methods are listed too
    flags.FLAGS(rest)
    out = help_text.text(module_name, full=full, config_fn=config_fn)
  except (flags.Error, UsageError, ConfigError) as e:  # help for the defaults instead
    flags.FLAGS.unparse_flags()
    flags.FLAGS.mark_as_parsed()
    out = help_text.text(module_name, full=full, config_fn=config_fn) + (
        f"\n(the other flags were not usable, so the defaults are shown: {e})\n")
  print(out, end="", flush=True)


class _QuietOrbaxThreads(logging.Filter):
  """Drops orbax's worker-thread log of a failed save; the same error reaches ``run_main`` as
  an exception and is reported there in one line (``--verbose`` keeps the log).

  Why a filter (issue 23 asked for the cause): orbax (0.12) writes every checkpoint item in a
  worker thread (``_SignalingThread`` in ``orbax/checkpoint/_src/futures/future.py``; its
  array, NumPy and JSON writers all use it, with async checkpointing off too), whose ``run``
  logs any exception with ``logging.exception`` on absl's logger and keeps it; ``join`` then
  re-raises that exception, traceback included, in the saving thread. orbax has no option to
  skip the log, and absl's logger is shared by every library, so its level cannot change for
  orbax alone. The filter drops only ERROR records from orbax's files saying a thread "raised
  an exception": nothing is lost, the exception arrives in full (a bug keeps its traceback).
  """

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and "orbax" in record.pathname
                and "raised an exception" in record.getMessage())


def help_text(prog: str) -> str:
  """``--help``: the CLI's docstring, its flags, the methods (with what they do) and datasets."""
  from drojax import methods
  from drojax.data.registry import DATASETS

  doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
  rows = [f"  {name:<16} {methods.TABLE.get(name, ('', '', 'registered by --import'))[2]}"
          for name in methods.method_names()]
  return "\n".join([f"{prog}: {doc}" if doc else prog, "", "Flags:",
                    *(_flags.FLAGS.module_help(m) for m in _flags.FLAGS.flags_by_module_dict()
                      if not m.startswith("absl")), "",
                    "Methods (--method / --methods; their hyper-parameters: "
                    "--config.method_config.<field>):", *rows, "",
                    "Datasets: " + ", ".join(DATASETS) + ", npz:PATH", "",
                    "Any config field: --config.<field>=VALUE (checked before anything runs)."])


def run_main(main: Callable[[list[str], list[tuple[str, str]]], Any],
             argv: Sequence[str] | None = None, *,
             help_config: Callable[[], Any] | None = None) -> None:
  """Parses absl flags (after removing ``--config.*``), runs ``main`` and maps errors to exits.

  ``main(argv, overrides)`` receives the positional leftovers and the config overrides. Exit
  statuses and messages: see the module docstring. Ends with ``SystemExit`` on an error.
  ``-h``/``--help``/``--helpfull`` print ``experiments.help.text`` and exit 0; ``help_config``
  (a CLI that takes ``--config.*``) builds the config its parsed flags select, for that text.
  """
  from absl import flags

  from drojax import distributed
  from drojax.data import DataError, DataNotFoundError

  argv = list(sys.argv if argv is None else argv)
  if (wanted := help_request(argv)) is not None:
    # The module run with ``python -m`` (its docstring and flags), else the one defining main.
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    print_help(spec.name if spec is not None else main.__module__, argv,
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

  from experiments import shutdown

  shutdown.install()  # no thread tracebacks after an interrupt or a failed write; SIGTERM
  try:
    rest, overrides = split_config_overrides(argv)
    import_modules(rest)  # before the flags: --help and --method see the users' methods
    if any(a in ("--help", "-h", "--helpfull") for a in rest):
      print(help_text(prog), flush=True)
      sys.exit(0)
    try:
      flags.FLAGS.unparse_flags()  # a second run in one process (tests) starts from defaults
      leftovers = flags.FLAGS(rest)
    except flags.Error as e:
      raise UsageError(str(e).replace("\n", " ")) from None
    if len(leftovers) > 1:
      raise UsageError(f"unexpected arguments: {' '.join(leftovers[1:])}")
    maybe_initialize_distributed(prog=prog)
    main(leftovers, overrides)
  except shutdown.Terminated:
    fail("terminated (SIGTERM); the workdir keeps its last checkpoint: rerun the same command to "
         "resume", 143)
  except KeyboardInterrupt:
    fail("interrupted; the workdir keeps its last checkpoint: rerun the same command to resume",
         130)
  except ConfigError as e:
    fail(str(config_usage_error(e)), 2)
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
