"""Process-wide start-up of a CLI run: joining a multi-process run (``DROJAX_DISTRIBUTED=1``,
docs/distributed.md) and JAX's persistent compilation cache. CLIs may change ``jax.config``; the
library never does.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from experiments.cli import UsageError

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "drojax", "jax")


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
