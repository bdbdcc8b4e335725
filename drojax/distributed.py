"""Several processes of one run: the start-up agreement and the one line a survivor prints.

Everything here runs on top of JAX's own multi-process runtime (``jax.distributed``: its
coordination service's key-value store and barriers, and its heartbeats that detect a dead
process); nothing here sends data of its own.

* :func:`start_options` reads the ``DROJAX_*`` start-up variables; :func:`join` calls
  ``jax.distributed.initialize`` and ends the process with one line when it cannot join.
* :func:`agree`: at the start of a run every process publishes a hash of its config, the token
  it reads from the work directory (written there by process 0) and its device count; every
  process reads every record and raises the same :class:`Disagreement` naming what differs.
* :func:`supervise` runs the command as a child process and reports how it ended. A survivor of
  a dead peer is ended by JAX's runtime (``jax.distributed``'s error polling aborts the process
  with a C++ stack; JAX 0.10's ``missed_heartbeat_callback`` cannot be used from Python), so the
  child sends that runtime log to a file and the supervisor turns it into one line:
  ``process N stopped; the workdir keeps checkpoint S; restart all processes with the same
  command``. A child that fails on its own hands its line to the supervisor with :func:`leave`.

This is an I/O module: it writes a token into the work directory and files into the
supervisor's directory, and :func:`supervise` and :func:`join` print to stderr.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from typing import Any, Mapping, Sequence

from drojax.specs import flatten

TOKEN_FILE = ".drojax_run_token"  # in the work directory, rewritten by process 0 at each start
SUPERVISOR_ENV = "DROJAX_SUPERVISOR_DIR"  # set by ``supervise`` in the child's environment
_LOG, _REPORT, _WORKDIR = "runtime.log", "report.json", "workdir"
# What JAX's runtime logs when it ends a process because the job lost a process.
_FATAL = "JAX distributed service detected fatal errors"
_DEAD_TASK = (re.compile(r"Task (\d+) heartbeat timeout"),
              re.compile(r"unhealthy \(stopped sending heartbeats\):\s*(\d+)"))
_LOST_LEADER = "Failed to send RPC to coordination service"  # process 0 hosts the service

# Seconds without a heartbeat after which JAX's coordination service declares a process dead
# (JAX's default is 100): survivors are ended within about this long after a peer stops.
HEARTBEAT_TIMEOUT_S = 20
_calls = 0  # agree() calls so far: each call's keys are its own


class Disagreement(Exception):
  """The processes were started with different configs, work directories or device counts."""


def _client():
  # The coordination service client that jax.distributed.initialize made (orbax's multihost
  # utilities use the same one); JAX has no public accessor for its key-value store.
  from jax._src import distributed as jax_distributed

  client = jax_distributed.global_state.client
  if client is None:
    raise RuntimeError("agree() needs jax.distributed.initialize() to have run")
  return client


def config_hash(config: Mapping[str, Any]) -> str:
  """SHA-256 of the config's canonical JSON (keys sorted)."""
  text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _differences(records: Sequence[dict[str, Any]]) -> list[str]:
  """What differs between process 0's record and the others', in words (empty: all agree)."""
  first, out = records[0], []
  for i, rec in enumerate(records[1:], start=1):
    if rec["hash"] != first["hash"]:
      a, b = flatten(first["config"]), flatten(rec["config"])
      fields = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
      shown = ", ".join(f"{k} is {a.get(k, '<absent>')!r} on process 0 and "
                        f"{b.get(k, '<absent>')!r} on process {i}" for k in fields[:3])
      more = f" (and {len(fields) - 3} more fields)" if len(fields) > 3 else ""
      out.append(f"config field {shown}{more}")
    if rec["token"] != first["token"]:
      out.append(f"workdir: process {i} does not see the token process 0 wrote into "
                 f"{first['workdir']} (process {i} has --workdir {rec['workdir']}; every "
                 "process needs the same directory, on a file system all of them share)")
    if rec["devices"] != first["devices"]:
      out.append(f"devices: process 0 has {first['devices']} and process {i} has "
                 f"{rec['devices']} local devices (every process needs the same number)")
  return out


def agree(config: Mapping[str, Any], workdir: str, *, timeout_s: float = 300.0) -> None:
  """Checks that every process runs the same config, in the same work directory, on as many
  devices; call it on every process at the same point, before any collective.

  Process 0 writes a fresh random token into ``workdir/.drojax_run_token``; every process
  publishes ``(config hash, config, the token it reads at its --workdir, local device count)``
  through JAX's coordination service and reads every other process's record, so all processes
  reach the same verdict. They meet at a barrier before returning or raising, so that no
  process leaves while another is still reading.

  Args:
    config: the run's config as a JSON-able dict (fields that may differ per host left out).
    workdir: this process's work directory.
    timeout_s: how long to wait for the other processes' records.

  Raises:
    Disagreement: naming each field, directory or device count that differs.
  """
  import jax

  global _calls
  _calls += 1
  client, me, n = _client(), jax.process_index(), jax.process_count()
  path = os.path.join(workdir, TOKEN_FILE)
  prefix = f"drojax/agree/{_calls}"
  if me == 0:
    token = uuid.uuid4().hex
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      f.write(token)
    os.replace(path + ".tmp", path)
    client.key_value_set(f"{prefix}/token_written", "1")
  else:  # read only once process 0 has written it
    client.blocking_key_value_get(f"{prefix}/token_written", int(timeout_s * 1000))
  try:
    with open(path) as f:
      token = f.read().strip()
  except OSError:
    token = None
  if os.environ.get(SUPERVISOR_ENV):
    with open(os.path.join(os.environ[SUPERVISOR_ENV], _WORKDIR), "w") as f:
      f.write(os.path.abspath(workdir))
  record = {"hash": config_hash(config), "config": dict(config), "token": token,
            "workdir": os.path.abspath(workdir), "devices": jax.local_device_count()}
  client.key_value_set(f"{prefix}/{me}", json.dumps(record))
  records = [record if i == me else
             json.loads(client.blocking_key_value_get(f"{prefix}/{i}", int(timeout_s * 1000)))
             for i in range(n)]
  differences = _differences(records)
  verdict = (f"the {n} processes disagree: " + "; ".join(differences) +
             "; start every process with the same command")
  if differences:  # before the barrier: a peer may leave (and the runtime end us) right after
    report(2, verdict)
  client.wait_at_barrier(f"{prefix}/done", int(timeout_s * 1000))
  if differences:
    raise Disagreement(verdict)


# ------------------------------------------------------------------------- supervised child

def _supervisor_dir() -> str | None:
  return os.environ.get(SUPERVISOR_ENV) or None


def divert_runtime_log() -> None:
  """In a supervised child: sends file descriptor 2 (where JAX's C++ runtime logs) to the
  supervisor's log file and keeps Python's ``sys.stderr`` on the terminal. Call it before
  ``jax.distributed.initialize``; a no-op outside ``supervise``."""
  folder = _supervisor_dir()
  if folder is None:
    return
  sys.stderr.flush()
  terminal = os.dup(2)
  log = os.open(os.path.join(folder, _LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log, 2)
  os.close(log)
  sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                         errors="backslashreplace")


def report(status: int, message: str | None) -> None:
  """In a supervised child: records the exit status and the one-line message the supervisor
  prints (``None``: the child printed its own output) in case this process is ended before it
  exits by itself; a no-op outside ``supervise``."""
  folder = _supervisor_dir()
  if folder is None:
    return
  tmp = os.path.join(folder, _REPORT + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"status": status, "message": message}, f)
  os.replace(tmp, os.path.join(folder, _REPORT))


def leave(status: int, message: str | None) -> None:
  """Ends a supervised child of a multi-process run at once with ``status`` (its supervisor
  prints ``message``): without JAX's shutdown barrier, which would wait for peers still
  running. Returns outside ``supervise``, where the caller prints and exits as usual."""
  if _supervisor_dir() is None:
    return
  report(status, message)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def await_peer_failure(seconds: float = HEARTBEAT_TIMEOUT_S + 15) -> None:
  """Waits ``seconds`` for JAX's runtime to end this process because a peer died (a collective
  with a dead peer fails at once; the runtime's verdict comes within its heartbeat timeout), so
  that an error caused by a dead peer is reported as such, not as a traceback. Returns when
  this process was not ended: the error is this process's own."""
  if _supervisor_dir() is not None:
    time.sleep(seconds)


# ------------------------------------------------------------------------- joining a run

START_TIMEOUT_S = 300  # hosts of one job may start minutes apart (SLURM, TPU VMs)


def _env_int(env: Mapping[str, str], name: str, low: int) -> int | None:
  text = env.get(name, "").strip()
  if not text:
    return None
  if not text.isdigit() or int(text) < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {env[name]!r}")
  return int(text)


def start_options(env: Mapping[str, str]) -> dict[str, int] | None:
  """The start-up options ``env`` (the process environment) asks for; None when
  ``DROJAX_DISTRIBUTED`` is unset or 0.

  Returns:
    ``timeout`` (``DROJAX_DISTRIBUTED_TIMEOUT``, seconds, default ``START_TIMEOUT_S``) and,
    where set, ``num_processes`` (``DROJAX_NUM_PROCESSES``) and ``process_id``
    (``DROJAX_PROCESS_ID``).

  Raises:
    ValueError: a variable is not an integer in range (or ``DROJAX_DISTRIBUTED`` not 0/1).
  """
  flag = env.get("DROJAX_DISTRIBUTED", "").strip().lower()
  if flag in ("", "0", "false"):
    return None
  if flag not in ("1", "true"):
    raise ValueError(f"DROJAX_DISTRIBUTED must be 1 or 0, got {env['DROJAX_DISTRIBUTED']!r}")
  options = {arg: value for name, arg, low in (("DROJAX_NUM_PROCESSES", "num_processes", 1),
                                               ("DROJAX_PROCESS_ID", "process_id", 0))
             if (value := _env_int(env, name, low)) is not None}
  return {**options, "timeout": _env_int(env, "DROJAX_DISTRIBUTED_TIMEOUT", 1) or START_TIMEOUT_S}


def join(*, prog: str, coordinator: str | None, timeout: int, **options: int) -> None:
  """``jax.distributed.initialize`` within ``timeout`` seconds, or one line and exit status 1.

  JAX finds the coordinator, process count and id on SLURM, Cloud TPU and GKE clusters;
  elsewhere ``coordinator`` (``JAX_COORDINATOR_ADDRESS``, read by JAX) and ``options``
  (``num_processes``, ``process_id``) say them. A failure prints ``PROG: error: distributed
  start-up failed: ...`` and ends the process: JAX's own timeout would abort the interpreter
  with a C++ stack trace, so a watchdog fires first (the connect call releases the GIL).
  """
  import threading

  import jax

  divert_runtime_log()
  where = coordinator or "the auto-detected coordinator"
  who = f"process {options['process_id']}" if "process_id" in options else "this process"

  def give_up(reason: str) -> None:
    print(f"{prog}: error: distributed start-up failed: {who} {reason}; start every process "
          f"with DROJAX_DISTRIBUTED=1, the same JAX_COORDINATOR_ADDRESS (host:port of process 0) "
          f"and DROJAX_NUM_PROCESSES", file=sys.stderr, flush=True)

  def watchdog() -> None:
    give_up(f"could not join all processes through {where} within "
            f"DROJAX_DISTRIBUTED_TIMEOUT={timeout}s")
    os._exit(1)

  timer = threading.Timer(timeout, watchdog)
  timer.daemon = True
  timer.start()
  try:
    jax.distributed.initialize(initialization_timeout=timeout + 60,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S, **options)
  except (ValueError, TypeError, RuntimeError) as e:
    timer.cancel()
    if coordinator is None and "coordinator_address" in str(e):
      give_up("found no cluster to join (SLURM, Cloud TPU, ...) and JAX_COORDINATOR_ADDRESS "
              "is not set")
    else:
      give_up(f"could not start: {' '.join(str(e).split())}")
    sys.exit(1)
  timer.cancel()


# ------------------------------------------------------------------------- the supervisor

@dataclasses.dataclass(frozen=True)
class PeerFailure:
  """What a supervised child's runtime log says about the process whose loss ended it."""

  process: int | None  # None: the log does not name it


def peer_failure(log_text: str) -> PeerFailure | None:
  """The lost process named in JAX's runtime log, or ``None`` when the log does not show the
  runtime ending the process for a lost peer."""
  if _FATAL not in log_text:
    return None
  for pattern in _DEAD_TASK:
    found = pattern.search(log_text)
    if found:
      return PeerFailure(int(found.group(1)))
  return PeerFailure(0 if _LOST_LEADER in log_text else None)


def local_copy(tree: Any) -> Any:
  """``tree`` with each (replicated) array replaced by its shard on this process's first
  device: a computation on it needs no other process (each evaluates its share alone).

  >>> import jax.numpy as jnp
  >>> local_copy({"w": jnp.ones(2)})["w"].tolist()
  [1.0, 1.0]
  """
  import jax

  return jax.tree.map(lambda a: a.addressable_shards[0].data, tree)


def latest_checkpoint(workdir: str) -> int | None:
  """The newest complete checkpoint step under ``workdir/checkpoints`` (orbax renames a step's
  directory to its number once every process has written it)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps) if steps else None


def peer_failure_line(failure: PeerFailure, workdir: str | None) -> str:
  """``process N stopped; the workdir keeps checkpoint S; restart all processes with the same
  command`` (with what is known)."""
  who = f"process {failure.process}" if failure.process is not None else "another process"
  if workdir is None:
    kept = "the run had not started"
  else:
    step = latest_checkpoint(workdir)
    kept = (f"the workdir keeps checkpoint {step}" if step is not None else
            "the workdir keeps no checkpoint yet")
  return f"{who} stopped; {kept}; restart all processes with the same command"


def supervise(command: Sequence[str], *, prog: str, env: Mapping[str, str] | None = None) -> int:
  """Runs ``command`` (the same CLI, as one process of a multi-process run) and returns the
  exit status this process should end with.

  The child runs in its own process group (a Ctrl-C or SIGTERM reaches it once, forwarded from
  here) and is SIGKILLed by the kernel when this process dies (Linux). Outcomes:

  * the child left with :func:`leave`: its status, and its message as ``PROG: error: ...``;
  * JAX's runtime ended the child because a peer died: ``PROG: error: process N stopped; ...``
    (:func:`peer_failure_line`) and status 1;
  * the child died of a signal otherwise: a line naming the signal and its runtime log (kept),
    status ``128 + signal``;
  * otherwise the child's own status.
  """
  folder = tempfile.mkdtemp(prefix="drojax-supervisor-")
  child_env = dict(os.environ if env is None else env)
  child_env[SUPERVISOR_ENV] = folder

  def die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
      import ctypes

      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

  child = subprocess.Popen(list(command), env=child_env, process_group=0,
                           preexec_fn=die_with_parent)
  forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
  previous = {s: signal.signal(s, lambda sig, _: child.send_signal(sig)) for s in forwarded}
  try:
    status = child.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)

  def read(name: str) -> str | None:
    try:
      with open(os.path.join(folder, name), errors="replace") as f:
        return f.read()
    except OSError:
      return None

  keep_log = False
  log_text = read(_LOG) or ""
  failure = peer_failure(log_text)
  left = read(_REPORT)
  try:
    if left is not None:  # the child knew its fate, even if the runtime ended it after
      rec = json.loads(left)
      if rec["message"]:
        print(f"{prog}: error: {rec['message']}", file=sys.stderr, flush=True)
      return int(rec["status"])
    if failure is not None:
      print(f"{prog}: error: {peer_failure_line(failure, read(_WORKDIR))}", file=sys.stderr,
            flush=True)
      return 1
    if status < 0:
      keep_log = True
      print(f"{prog}: error: the process ended with signal {signal.Signals(-status).name}; "
            f"the JAX runtime's log is {os.path.join(folder, _LOG)}", file=sys.stderr,
            flush=True)
      return 128 - status
    return status
  finally:
    if not keep_log:
      for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
      os.rmdir(folder)


def print_traceback_and_leave(status: int = 1) -> None:
  """In a supervised child: prints the current exception's traceback and leaves (a bug, once
  :func:`await_peer_failure` has ruled out a dead peer); a no-op outside ``supervise``."""
  if _supervisor_dir() is not None:
    traceback.print_exc()
    leave(status, None)


__all__ = ["Disagreement", "HEARTBEAT_TIMEOUT_S", "PeerFailure", "TOKEN_FILE", "SUPERVISOR_ENV",
           "agree", "await_peer_failure", "config_hash", "divert_runtime_log",
           "latest_checkpoint", "local_copy", "START_TIMEOUT_S", "start_options", "join",
           "leave", "peer_failure", "peer_failure_line", "report", "supervise"]
