"""The study framework of ``reproduce``, ``robustness_study`` and ``group_shift``.

A study module declares a :class:`Study` (its plan of runs, how one run trains and is scored,
its report) and calls :func:`main`; the rest is shared: the flags (:func:`flags_of`), one
scheduler (:func:`work`), several processes over one plan (``--workers``, sharing the machine
or its accelerator, stopped after ``--time_limit`` seconds if asked; or ``--shard=I/N``: a
fixed cost-balanced share per process) and, for the scaled studies, the plan's selection
(``--scale``, ``--studies``, ``--runs``) and the report writer (``experiments.study_report``).

A run is finished when its workdir holds ``results.json``; a run that diverged
(``FloatingPointError``) holds ``FAILED`` with the error and is skipped until its file is
removed; a run being trained holds ``.claim`` (process id and host), so processes sharing the
root never train the same run, and a claim of a dead process on this host is taken over.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
import time
import types
from typing import Any, Callable, Mapping, Sequence

from absl import flags

from experiments import cli, flag_defs, launch, multi

FLAGS = flags.FLAGS

CLAIM = ".claim"
FAILED = "FAILED"  # a run that raised writes its error here; --retry_failed runs it again


class Scale(types.SimpleNamespace):
  """The sizes of one version of a study (``--scale``), read as attributes (``scale.width``);
  each study's ``SCALES`` names its own."""

  def replace(self, **changes: Any) -> Scale:
    """A copy with ``changes``; a name the scale does not have is refused (a typo)."""
    unknown = sorted(set(changes) - set(vars(self)))
    if unknown:
      raise TypeError(f"Scale has no field {', '.join(unknown)}; its fields: "
                      f"{', '.join(sorted(vars(self)))}")
    return Scale(**{**vars(self), **changes})


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run of a study."""

  study: str  # the sub-study (group_shift: the method)
  name: str  # the run's name within its study (a method, or method + a value)
  method: str
  seed: int
  config: Any  # locked ml_collections.ConfigDict
  layout: str = "{study}/{name}/seed{seed}"  # its workdir under the root

  def workdir(self, root: str) -> str:
    path = self.layout.format(study=self.study, name=self.name, seed=self.seed)
    return os.path.join(root, *path.split("/"))

  @property
  def tag(self) -> str:
    return f"{self.study}/{self.name}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Study:
  """What a study CLI declares; flags, scheduling, workers, shards and the report are shared.

  A scaled study (``scales``) is planned by ``plan(parts, seeds, scale) -> (runs, names of runs
  whose method is missing)`` and reported by ``study_report`` through ``metrics`` and
  ``sections``; another plans itself with ``select(overrides) -> (scale, runs, missing)`` from
  its own ``flags`` (and takes ``--config.*``) and writes its report with ``write``.
  """

  module: str  # run as ``python -m module`` (its workers too)
  run: Callable  # (spec, root, scale, data_dir, cache_dir): train and score one run
  title: str = ""  # the report's heading
  parts: tuple[str, ...] = ()  # its sub-studies (``--studies``), in report order
  scales: Mapping[str, Scale] = dataclasses.field(default_factory=dict)  # ``--scale`` choices
  default_scale: str = ""
  plan: Callable | None = None
  metrics: Callable | None = None  # a results.json dict -> {column: number or None}
  sections: Callable | None = None  # (study_report.Report) -> markdown lines
  note: Callable = lambda scale: ""  # the report's description of its numbers
  report_file: str = "results.md"
  cost: Callable[[RunSpec], float] = lambda spec: 1.0  # spreads the runs over --shard
  prepare: Callable | None = None  # (runs, root, scale, data_dir): once, before any run
  sized: Callable = lambda scale: scale  # the scale after the study's own flags
  select: Callable | None = None
  write: Callable | None = None  # (runs, root, out_dir) -> the report's path
  flags: Mapping[str, tuple[str, Any, str]] = dataclasses.field(default_factory=dict)
  root_flag: str = "root"
  report_dir: str = "report"  # under the root


def finished(spec: RunSpec, root: str) -> bool:
  return os.path.isfile(os.path.join(spec.workdir(root), "results.json"))


def failed(spec: RunSpec, root: str) -> str | None:
  """The recorded error of a run that raised (e.g. diverged), or None."""
  path = os.path.join(spec.workdir(root), FAILED)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return f.read().strip()


def settled(spec: RunSpec, root: str) -> bool:
  """Finished, or failed (and not to be retried unless asked)."""
  return finished(spec, root) or failed(spec, root) is not None


def parse_seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in multi.parse_list(text, "--seeds")]
  except ValueError:
    seeds = [-1]
  if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise cli.UsageError(f"--seeds must be distinct non-negative integers, got {text!r}")
  return seeds


def preset(experiment: str, method: str, dataset: str, seed: int, fields: Mapping[str, Any]):
  """``experiments.configs.<experiment>``'s paper preset of ``method`` on ``dataset``, with
  ``seed``, no progress bars and ``fields`` (dotted paths such as ``eval.images`` or
  ``method_config.rho``; None is left at the preset's value). Locked."""
  import importlib

  from experiments.configs import common

  c = importlib.import_module(f"experiments.configs.{experiment}").make_config(
      method, preset="paper", dataset=dataset)
  common.set_fields(c, {path: value for path, value in
                        {"seed": seed, "progress": False, **fields}.items() if value is not None})
  return c


def train_run(spec: RunSpec, root: str, *, data_dir: str | None, cache_dir: str | None,
              extra_evaluation: Callable | None = None) -> dict[str, Any]:
  """``experiments.train.train_and_evaluate`` of ``spec`` into its workdir."""
  from experiments import train

  config = flag_defs.set_run_fields(spec.config, data_dir=data_dir, compilation_cache_dir=cache_dir)
  return train.train_and_evaluate(config, spec.workdir(root), extra_evaluation=extra_evaluation)


# ------------------------------------------------------------------------------- claims

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def try_claim(workdir: str) -> bool:
  """Atomically claims ``workdir`` for this process; a claim by a dead process is taken over."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CLAIM)
  me = {"pid": os.getpid(), "host": socket.gethostname()}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      try:
        with open(path) as f:
          owner = json.load(f)
      except (OSError, ValueError):
        owner = {}
      stale = (owner.get("host") == me["host"] and isinstance(owner.get("pid"), int)
               and not _pid_alive(owner["pid"]))
      if not stale:
        return False
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(me, f)
    return True
  return False


def release(workdir: str) -> None:
  try:
    os.remove(os.path.join(workdir, CLAIM))
  except FileNotFoundError:
    pass


# ------------------------------------------------------------------------------- the scheduler

def work(runs: Sequence[RunSpec], root: str, run_fn: Callable[[RunSpec], Any], *,
         log: Callable[[str], Any] = print, bar=None, claims: bool = True) -> int:
  """Runs every unsettled, unclaimed run in order with ``run_fn(spec)`` (a string it returns,
  the run's headline numbers, ends its ``done`` line); returns how many this process finished.

  A run that diverges (``FloatingPointError``) is recorded in its ``FAILED`` file and skipped
  from then on; any other error stops this process. ``bar``: an optional tqdm bar over ``runs``,
  advanced for each run settled here or found settled. ``claims=False``: the processes of one
  multi-process JAX run, which train every run together.
  """
  done = 0
  for spec in runs:
    workdir = spec.workdir(root)
    if bar is not None:
      bar.set_postfix_str(spec.tag)
    if settled(spec, root):
      log(f"{spec.tag}: {'finished' if finished(spec, root) else 'failed'} before, skipped")
      if bar is not None:
        bar.update(1)
      continue
    if claims and not try_claim(workdir):  # another process trains it
      continue
    try:
      if finished(spec, root):  # finished between the check and the claim
        continue
      start = time.monotonic()
      log(f"start {spec.tag}")
      try:
        headline = run_fn(spec)
      except FloatingPointError as e:  # drojax.loop.NonFiniteError: diverged; the rest goes on
        message = " ".join(f"{type(e).__name__}: {e}".split())
        with open(os.path.join(workdir, FAILED), "w") as f:
          f.write(message + "\n")
        log(f"FAILED {spec.tag}: {message}")
        continue
      log(f"done  {spec.tag} in {time.monotonic() - start:.0f} s" +
          (f": {headline}" if isinstance(headline, str) else ""))
      done += 1
    finally:
      if claims:
        release(workdir)
      if bar is not None and settled(spec, root):
        bar.update(1)
  return done


def shard(runs: Sequence[RunSpec], index: int, count: int, *,
          cost: Callable[[RunSpec], float] = lambda spec: 1.0) -> list[RunSpec]:
  """The ``index``-th of ``count`` shares of ``runs``: dealt round-robin, costliest first.

  Depends only on the plan (not on which runs have finished), so the ``count`` shares
  together are every run exactly once, whatever each process has done before.
  """
  if not 0 <= index < count:
    raise ValueError(f"shard index must be in [0, {count}); got {index}.")
  ordered = sorted(runs, key=lambda r: (-cost(r), r.seed, r.study, r.name))
  return ordered[index::count]


def parse_shard(text: str) -> tuple[int, int]:
  try:
    index, count = (int(v) for v in text.split("/"))
  except ValueError:
    raise cli.UsageError(f"--shard must be I/N with integers, e.g. 0/6; got {text!r}") from None
  if count < 1 or not 0 <= index < count:
    raise cli.UsageError(f"--shard I/N needs N >= 1 and 0 <= I < N; got {text!r}")
  return index, count


def spawn_workers(module: str, n: int, argv: Sequence[str], root: str, *,
                  cpu: bool = True) -> list[subprocess.Popen]:
  """``n`` processes ``python -m module *argv --worker_index=i`` logging to ``root/logs``. On a
  CPU each is pinned to one core (one XLA thread) when there are enough cores; on an
  accelerator each may take 0.9 / n of its memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``, unless
  set; JAX would take 75 % per process)."""
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  pin = cpu and len(cores) >= n > 1
  logs = os.path.join(root, "logs")
  os.makedirs(logs, exist_ok=True)
  procs = []
  for i in range(n):
    env = dict(os.environ)
    if pin:  # one core, one XLA thread each: two such workers beat one 2-thread process here
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                          "intra_op_parallelism_threads=1").strip()
    elif not cpu:
      env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / n:.3g}")
    out = open(os.path.join(logs, f"worker{i}.log"), "a")
    cmd = [sys.executable, "-m", module, *argv, f"--worker_index={i}"]
    core = cores[i] if pin else None
    procs.append(subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
        preexec_fn=(lambda c=core: os.sched_setaffinity(0, {c})) if pin else None))
  return procs


def watch(procs: Sequence[subprocess.Popen], runs: Sequence[RunSpec], root: str, *,
          desc: str, time_limit: float = 0.0, started: float | None = None) -> None:
  """One progress bar over all runs (rate and ETA in runs), until the workers exit or, after
  ``time_limit`` seconds (0: none) from ``started`` (``time.monotonic()`` when they were spawned;
  None: now), are stopped (SIGTERM: each keeps its last checkpoint)."""
  from tqdm import tqdm

  deadline = ((time.monotonic() if started is None else started) + time_limit if time_limit
              else math.inf)
  with tqdm(total=len(runs), desc=desc, unit="run") as bar:
    while True:
      bar.update(sum(settled(s, root) for s in runs) - bar.n)
      active = [s.tag for s in runs
                if os.path.isfile(os.path.join(s.workdir(root), CLAIM)) and not finished(s, root)]
      bar.set_postfix_str(", ".join(active)[:80])
      if all(p.poll() is not None for p in procs) or time.monotonic() >= deadline:
        break
      time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))
  if any(p.poll() is None for p in procs):  # the time limit
    for p in procs:
      p.terminate()
    for p in procs:
      p.wait()
    left = sum(not settled(s, root) for s in runs)
    print(f"stopped at the time limit ({time_limit:g} s); {left} runs are left for the next call "
          "of the same command", flush=True)
    return
  bad = [p.returncode for p in procs if p.returncode]
  if bad:
    raise cli.UsageError(f"{len(bad)} worker(s) failed (exit {bad}); see "
                         f"{os.path.join(root, 'logs')} and re-run the same command to resume")


# ------------------------------------------------------------------------------- the CLI

_NOT_FOR_WORKERS = ("workers", "worker_index", "report_only", "report_dir", "retry_failed",
                    "time_limit")


def flags_of(study: Study) -> dict[str, tuple[str, Any, str]]:
  """The flags of ``study``'s CLI (the framework's and its own): ``flag_defs.uses("data_dir",
  "compilation_cache_dir", own=flags_of(STUDY))`` on its main."""
  out = {
      "seeds": ("string", "0,1,2", "Comma-separated training seeds."),
      "workers": ("integer", 1, "Worker processes (on a CPU each pinned to one core when it "
                  "can be; on an accelerator they share the device and its memory)."),
      "time_limit": ("integer", 0, "Seconds after which the workers are stopped (0: none); the "
                     "report then covers what finished, and the same command resumes the rest."),
      "worker_index": ("integer", -1, "Internal: this process is worker N."),
      "shard": ("string", None, "I/N: run only the I-th of N cost-balanced shares of the "
                "planned runs (0 <= I < N), for N processes sharing one device."),
      "retry_failed": ("bool", False, "Run again the runs that failed (FAILED files)."),
      "report_only": ("bool", False, "Only (re)write the report from the finished runs."),
      "report_dir": ("string", None, "Where the report goes (default "
                     f"{os.path.join('ROOT', study.report_dir)})."),
  }
  if study.root_flag == "root":
    out["root"] = ("string", None, "Root directory of the study (one workdir per run).")
  if study.scales:
    out.update(
        scale=("string", study.default_scale, " | ".join(study.scales) + " (SCALES)"),
        studies=("string", ",".join(study.parts), "Comma-separated studies to run."),
        runs=("string", None, "Only these run names (comma-separated); default all of the "
              "studies'."))
  return {**out, **study.flags}


def select(study: Study) -> tuple[Scale, list[RunSpec], list[str]]:
  """A scaled study's ``--scale``, and the runs of ``--studies``, ``--seeds`` and ``--runs``
  (checked) with the names of the missing methods."""
  flag_defs.check_choice(FLAGS.scale, list(study.scales), "--scale")
  scale = study.sized(study.scales[FLAGS.scale])
  parts = multi.parse_list(FLAGS.studies, "--studies")
  for part in parts:
    flag_defs.check_choice(part, list(study.parts), "--studies")
  runs, missing = study.plan(parts, parse_seeds(FLAGS.seeds), scale)
  if FLAGS.runs:
    every, every_missing = study.plan(list(study.parts), [0], scale)
    known = list(dict.fromkeys([r.name for r in every] + every_missing))
    wanted = multi.parse_list(FLAGS.runs, "--runs")
    for name in wanted:
      flag_defs.check_choice(name, known, "--runs")
    runs = [r for r in runs if r.name in wanted]
    missing = [m for m in missing if m in wanted]
  return scale, runs, missing


def main(study: Study, argv, overrides) -> None:
  """The study CLI: plan, validate, run (here, in ``--workers`` or as one ``--shard``), report."""
  del argv
  name = study.module.rpartition(".")[2]
  if overrides and study.select is None:
    raise cli.UsageError(f"{name} takes no --config.* overrides: the study is fixed by --scale "
                         "and its flags (edit SCALES to change it)")
  root = FLAGS[study.root_flag].value
  if not root:
    raise cli.UsageError(f"--{study.root_flag} is required")
  if FLAGS.workers < 1 or FLAGS.time_limit < 0:
    raise cli.UsageError(f"--workers must be >= 1 and --time_limit >= 0, got {FLAGS.workers} "
                         f"and {FLAGS.time_limit}")
  shard_of = parse_shard(FLAGS.shard) if FLAGS.shard else None
  if shard_of and (FLAGS.workers > 1 or FLAGS.time_limit):
    raise cli.UsageError("--shard is one process's share of the runs; --workers (and "
                         "--time_limit) start and stop the processes: use one")
  if FLAGS.worker_index < 0 and (FLAGS.workers > 1 or FLAGS.time_limit):
    # This process watches the workers: before JAX starts, no accelerator memory taken up front
    # (JAX's default is 75 %); the workers inherit it, each capped at its fraction.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  scale, runs, missing = study.select(overrides) if study.select else select(study)
  root = os.path.abspath(root)
  out_dir = FLAGS.report_dir or os.path.join(root, study.report_dir)
  import jax

  def report(wall_s=None):
    if jax.process_index() != 0:
      return
    if study.write:
      md = study.write(runs, root, out_dir)
    else:
      from experiments import study_report

      md = study_report.write_report(study, runs, root, out_dir, scale_name=FLAGS.scale,
                                     scale=scale, missing=missing, wall_s=wall_s)
    print(f"report: {md}", flush=True)

  if FLAGS.report_only:
    return report()
  if shard_of:
    runs = shard(runs, *shard_of, cost=study.cost)
  from experiments import train

  data_dir = train.resolve_data_dir(FLAGS.data_dir, runs[0].config) if runs else None
  cache = FLAGS.compilation_cache_dir
  run = lambda spec: study.run(spec, root, scale, data_dir, cache)
  start = time.monotonic()
  who = (f"[worker {FLAGS.worker_index}] " if FLAGS.worker_index >= 0 else
         f"[shard {FLAGS.shard}] " if shard_of else "")
  stamp = lambda m: f"{who}{m}; elapsed {time.monotonic() - start:.0f} s"
  log = lambda m: print(stamp(m), flush=True)  # a worker's or a shard's log file: no bar
  claims = jax.process_count() == 1  # several JAX processes train each run together
  if FLAGS.worker_index >= 0:
    work(runs, root, run, log=log)
    return
  for spec in runs:  # every config checked before the first run trains
    train.validate(spec.config, num_devices=jax.device_count())
  os.makedirs(root, exist_ok=True)
  if FLAGS.retry_failed:
    for spec in runs:
      if failed(spec, root):
        os.remove(os.path.join(spec.workdir(root), FAILED))
  launch.enable_compilation_cache(cache if cache is not None else "~/.cache/drojax/jax")
  if missing:
    print(f"missing methods (not run): {', '.join(missing)}", flush=True)
  print(f"{len(runs)} runs on {jax.devices()[0].device_kind}; root {root}", flush=True)
  argv = [FLAGS[f].serialize() for f in FLAGS.flag_values_dict()
          if FLAGS[f].present and f not in _NOT_FOR_WORKERS]
  argv += [f"--config.{field}={value}" for field, value in overrides]
  spawned = time.monotonic()
  procs = spawn_workers(study.module, FLAGS.workers, argv, root,
                        cpu=jax.default_backend() == "cpu"
                        ) if FLAGS.workers > 1 or FLAGS.time_limit else []
  try:
    if study.prepare:
      study.prepare(runs, root, scale, data_dir)
    if procs:
      watch(procs, runs, root, desc=f"{name} runs", time_limit=FLAGS.time_limit,
            started=spawned)
    elif shard_of:
      work(runs, root, run, log=log)
    else:
      from tqdm import tqdm

      with tqdm(total=len(runs), desc=f"{name} runs", unit="run") as bar:
        work(runs, root, run, log=lambda m: bar.write(stamp(m)), bar=bar, claims=claims)
  except BaseException:  # Ctrl-C or an error here: the workers must not run on unwatched
    for p in procs:
      p.terminate()
    raise
  if shard_of:  # the other shards may still run: one --report_only call writes the report
    print(f"shard {FLAGS.shard} done in {time.monotonic() - start:.0f} s; write the report with "
          f"--report_only once every shard has finished", flush=True)
    return
  report(time.monotonic() - start)
