"""Shared helpers for the benchmark scripts: timing, memory, machine facts, tables, JSON lines.

Every script under ``benchmarks/`` prints a Markdown table and, with ``--json PATH``, appends
one JSON object per row to ``PATH`` (JSON lines). Use these helpers so the figures are taken
the same way everywhere:

* ``time_calls(fn, ...)``: wall-clock seconds per call of a function that blocks until its
  result is ready (call ``jax.block_until_ready`` inside ``fn``), median over repeats.
* ``time_interleaved({name: fn}, ...)``: the same for several functions, measured in
  alternating rounds so that load from other processes on a shared machine hits all of them
  alike; compare the ratios, not the absolute figures.
* ``PeakRss``: the process's peak resident memory during a block (Linux ``VmHWM``, reset
  through ``/proc/self/clear_refs`` where permitted; otherwise the process-lifetime peak).
* ``machine_info()``, ``utc_now()``, ``append_jsonl(path, rows)``, ``markdown_table(rows, cols)``.

This module imports only the standard library, so a benchmark that does not use JAX (the
PyTorch reference) can import it without pulling JAX in.

Example::

  from benchmarks import _common  # or `import _common` when run as a script
  stats = _common.time_calls(lambda: step(), iters=5, repeats=3)
  print(stats.median_s)
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call of one function.

  Attributes:
    median_s: median over repeats of (total time of ``iters`` calls) / ``iters``.
    min_s: the fastest repeat, per call (least disturbed by other load).
    samples_s: every repeat's per-call seconds, in the order measured.
  """

  median_s: float
  min_s: float
  samples_s: tuple[float, ...]

  def per_second(self, items_per_call: int, *, use: str = "median") -> float:
    """Items per second (e.g. images/s for a batch of ``items_per_call``)."""
    seconds = self.median_s if use == "median" else self.min_s
    return items_per_call / seconds


def _timing(samples: Sequence[float]) -> Timing:
  return Timing(median_s=statistics.median(samples), min_s=min(samples), samples_s=tuple(samples))


def time_calls(fn: Callable[[], Any], *, iters: int, repeats: int, warmup: int = 1) -> Timing:
  """Times ``fn()`` (which must block until its work is done).

  Args:
    fn: no-argument callable; for JAX, end it with ``jax.block_until_ready``.
    iters: calls per repeat (static).
    repeats: number of repeats; the median and min are over these.
    warmup: untimed calls first (compilation, caches).

  Returns:
    A ``Timing``.
  """
  if iters < 1 or repeats < 1:
    raise ValueError(f"iters and repeats must be >= 1, got iters={iters}, repeats={repeats}")
  for _ in range(warmup):
    fn()
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(iters):
      fn()
    samples.append((time.perf_counter() - start) / iters)
  return _timing(samples)


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, iters: int, rounds: int,
                     warmup: int = 1) -> dict[str, Timing]:
  """Times several functions in alternating rounds (A B C A B C ...), for fair ratios.

  On a machine shared with other work, load comes and goes; measuring each function in every
  round spreads that noise over all of them, so ratios of the medians are trustworthy even
  when the absolute figures are not. The order within a round rotates each round.

  Args:
    fns: name -> no-argument callable that blocks until done.
    iters: calls per function per round.
    rounds: number of rounds.
    warmup: untimed calls of each function before the first round.

  Returns:
    name -> ``Timing`` over the rounds.
  """
  if iters < 1 or rounds < 1:
    raise ValueError(f"iters and rounds must be >= 1, got iters={iters}, rounds={rounds}")
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      fns[name]()
  samples: dict[str, list[float]] = {name: [] for name in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      fn = fns[name]
      start = time.perf_counter()
      for _ in range(iters):
        fn()
      samples[name].append((time.perf_counter() - start) / iters)
  return {name: _timing(s) for name, s in samples.items()}


def _read_status_kb(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS counter for this process; False where not permitted."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def current_rss_mb() -> float:
  """Current resident set size in MiB (``VmRSS``; ``ru_maxrss`` fallback off Linux)."""
  kb = _read_status_kb("VmRSS")
  if kb is None:
    import resource  # pylint: disable=import-outside-toplevel
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / 1024.0


def peak_rss_mb() -> float:
  """Peak resident set size in MiB since the last reset (``VmHWM``) or process start."""
  kb = _read_status_kb("VmHWM")
  if kb is None:
    import resource  # pylint: disable=import-outside-toplevel
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / 1024.0


class PeakRss:
  """Context manager: peak RSS (MiB) of the process while the block ran.

  ``peak_mb`` includes everything resident (interpreter, libraries, other live arrays), not
  only what the block allocated; ``reset`` says whether the counter could be reset at entry
  (if not, ``peak_mb`` is the process-lifetime peak so far).
  """

  def __init__(self):
    self.peak_mb = float("nan")
    self.reset = False

  def __enter__(self) -> "PeakRss":
    self.reset = _reset_peak_rss()
    return self

  def __exit__(self, *exc) -> None:
    self.peak_mb = peak_rss_mb()


def utc_now() -> str:
  """The current UTC time, ISO 8601 to the second."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
  """Facts about the machine and interpreter to store next to every figure."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count()
  try:
    load = os.getloadavg()[0]
  except OSError:
    load = float("nan")
  return {
      "host": platform.node(),
      "cpu": cpu_model(),
      "cores": cores,
      "loadavg_1m": round(load, 2),
      "python": platform.python_version(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def append_jsonl(path: str | None, rows: Iterable[Mapping[str, Any]]) -> None:
  """Appends each row as one JSON object per line to ``path`` (no-op for ``None``)."""
  if not path:
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, "a") as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return str(value)


def _fmt(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if value != value:  # NaN
      return "-"
    if abs(value) >= 100:
      return f"{value:,.0f}"
    if abs(value) >= 10:
      return f"{value:.1f}"
    return f"{value:.2f}"
  return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  """Formats ``rows`` as a Markdown table with the given columns (missing cells as ``-``)."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
  return "\n".join(lines)


def log(*args: Any) -> None:
  """Progress messages go to stderr so stdout keeps only the table."""
  print(*args, file=sys.stderr, flush=True)
