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
  """Turns on JAX's persistent compilation cache in ``cache_dir`` ('' or 'none' disables); a
  folder that cannot be created (a read-only home) leaves the run without it, said in one line."""
  import jax

  from experiments.cli import describe_os_error

  if not cache_dir or cache_dir.lower() == "none":
    return None
  path = os.path.expanduser(cache_dir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    print(f"warning: no compilation cache (--compilation_cache_dir {path}: "
          f"{describe_os_error(e)}); every run compiles afresh", file=sys.stderr, flush=True)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return path


def maybe_initialize_distributed(environ: Any = None, *, prog: str = "drojax") -> bool:
  """Joins the multi-process run when ``DROJAX_DISTRIBUTED=1`` (True; False when unset), before
  any JAX work, under ``drojax.distributed.supervise``, with gloo CPU collectives and without
  JAX's preemption service (why: docs/distributed.md); a bad variable is a ``UsageError``."""
  from drojax import distributed

  env = os.environ if environ is None else environ
  try:
    options = distributed.start_options(env)
  except ValueError as e:
    raise UsageError(str(e)) from None
  if options is None:
    return False
  if environ is None and not env.get(distributed.SUPERVISOR_ENV):
    # This process supervises the one that joins: see drojax.distributed.supervise.
    sys.exit(distributed.supervise([sys.executable, *sys.orig_argv[1:]], prog=prog))
  import jax

  if "jax_cpu_collectives_implementation" in jax.config.values and not env.get(
      "JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_enable_preemption_service", False)
  distributed.join(prog=prog, coordinator=env.get("JAX_COORDINATOR_ADDRESS") or None, **options)
  return True
