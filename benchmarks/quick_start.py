"""The README's quick start, cold (``--compilation_cache_dir=none``), timed: wall, CPU and where
the time goes (start-up, data, compilation of the train step, training, clean / corruption /
adversarial evaluation, writing).

  python benchmarks/quick_start.py [--repeats=3] [--out=quick_start.json] [--install]

Each repeat runs the README's command 1 quick start in a fresh child process and a fresh
workdir, exactly ``python -m experiments.cifar_c --method=dro_augmix --preset=quick
--dataset=digits --workdir=...`` plus ``--compilation_cache_dir=none``; the child wraps the
phases with timers (``drojax.loop.fit``: its first train step, which compiles, and the rest;
``drojax.evaluate.protocol``: clean prediction, corruptions, attacks) and reports them as JSON
lines; ``other`` is the rest of the wall time (interpreter start, writing the results, exit).
Each phase also has its CPU time (``time.process_time``: every thread of the child), which,
unlike wall time, means something on a loaded machine. The parent measures the child's wall
and CPU time (user + system, ``os.wait4``) and the load average before and after, prints a
table per repeat and the median, and writes every row and the median to ``--out`` (JSON).
``--install`` also times the README's install into a fresh virtualenv (needs the package
index). Record the machine's load with the figures: under load only ratios mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_START = ["-m", "experiments.cifar_c", "--method=dro_augmix", "--preset=quick",
               "--dataset=digits"]
PHASES = ("startup", "data_and_setup", "compile_first_step", "train_rest", "eval_clean",
          "eval_corruptions", "eval_adversarial", "other")
TAG = "QUICK_START_PHASE "


def _child(argv: list[str]) -> None:
  """Runs the quick start in this process with timers around its phases."""
  t_start = time.perf_counter()
  marks: dict[str, float] = {}
  cpu_marks: dict[str, float] = {}

  def report(name: str, seconds: float, cpu_seconds: float) -> None:
    marks[name] = marks.get(name, 0.0) + seconds
    cpu_marks[name] = cpu_marks.get(name, 0.0) + cpu_seconds

  from drojax import loop
  from drojax.evaluate import clean, protocol

  fit, first_done = loop.fit, {}

  def timed_fit(state, train_step, *args, **kwargs):
    report("data_and_setup", time.perf_counter() - t_start - marks.get("startup", 0.0),
           time.process_time() - cpu_marks.get("startup", 0.0))

    def step(state, batch):
      t0, c0 = time.perf_counter(), time.process_time()
      state, metrics = train_step(state, batch)
      if not first_done:
        import jax

        jax.block_until_ready(metrics)
        first_done["at"] = time.perf_counter()
        report("compile_first_step", first_done["at"] - t0, time.process_time() - c0)
      return state, metrics

    t0, c0 = time.perf_counter(), time.process_time()
    out = fit(state, step, *args, **kwargs)
    report("train_rest", time.perf_counter() - t0 - marks.get("compile_first_step", 0.0),
           time.process_time() - c0 - cpu_marks.get("compile_first_step", 0.0))
    return out

  def timer(name, fn):
    def wrapped(*args, **kwargs):
      t0, c0 = time.perf_counter(), time.process_time()
      try:
        return fn(*args, **kwargs)
      finally:
        report(name, time.perf_counter() - t0, time.process_time() - c0)
    return wrapped

  loop.fit = timed_fit
  protocol.predict = timer("eval_clean", clean.predict)
  protocol._corruption_results = timer("eval_corruptions", protocol._corruption_results)  # pylint: disable=protected-access
  protocol._adversarial_results = timer("eval_adversarial", protocol._adversarial_results)  # pylint: disable=protected-access
  # CPU time since the process started (the interpreter's start and these imports).
  report("startup", time.perf_counter() - t_start, time.process_time())

  from experiments import cifar_c, cli

  try:
    cli.run_main(cifar_c.main, ["experiments.cifar_c"] + argv)
  except SystemExit as e:
    if e.code:
      raise
  finally:
    print(TAG + json.dumps({"wall": marks, "cpu": cpu_marks}), flush=True)


def _load() -> float:
  return os.getloadavg()[0]


def _run_once(workdir: str) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  argv = QUICK_START[2:] + [f"--workdir={workdir}", "--compilation_cache_dir=none"]
  load_before = _load()
  t0 = time.perf_counter()
  proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", *argv],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - t0
  if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit(f"quick start failed (exit {os.waitstatus_to_exitcode(status)}):\n"
                     f"{out[-3000:]}")
  phases, phases_cpu = {}, {}
  for line in out.splitlines():
    if line.startswith(TAG):
      marks = json.loads(line[len(TAG):])
      phases, phases_cpu = marks["wall"], marks["cpu"]
  cpu = usage.ru_utime + usage.ru_stime
  # Wall: the interpreter's start, imports before the timers, writing the results, the exit;
  # CPU: writing the results and the exit.
  phases["other"] = wall - sum(phases.values())
  phases_cpu["other"] = cpu - sum(phases_cpu.values())
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return {"wall_s": wall, "cpu_user_s": usage.ru_utime, "cpu_system_s": usage.ru_stime,
          "load_before": load_before, "load_after": _load(), "phases_s": phases,
          "phases_cpu_s": phases_cpu,
          "clean_accuracy": results["clean_accuracy"],
          "mean_corruption_accuracy": results["mean_corruption_accuracy"],
          "adversarial_accuracy": results["adversarial_accuracy"],
          "train_seconds": results["train_seconds"], "steps": results["steps"]}


def _install_seconds() -> float:
  """The README's install (``python3 -m venv .venv && .venv/bin/pip install -e '.[test]'``) in
  a fresh copy's fresh virtualenv."""
  tmp = tempfile.mkdtemp(prefix="drojax-install-")
  try:
    venv = os.path.join(tmp, ".venv")
    t0 = time.perf_counter()
    subprocess.run(["python3", "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "-e", ".[test]"],
                   cwd=ROOT, check=True)
    return time.perf_counter() - t0
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _table(row: dict, label: str) -> str:
  lines = [f"{label}: wall {row['wall_s']:.1f} s, CPU {row['cpu_user_s'] + row['cpu_system_s']:.1f}"
           f" s ({row['cpu_user_s']:.1f} user + {row['cpu_system_s']:.1f} system), load "
           f"{row['load_before']:.1f} before / {row['load_after']:.1f} after; clean "
           f"{100 * row['clean_accuracy']:.1f}%, mean corruption "
           f"{100 * row['mean_corruption_accuracy']:.1f}%",
           "  | phase | wall s | share of wall | CPU s | share of CPU |", "  |---|---|---|---|---|"]
  cpu = row["cpu_user_s"] + row["cpu_system_s"]
  for name in PHASES:
    s, c = row["phases_s"].get(name), row["phases_cpu_s"].get(name)
    if s is not None:
      lines.append(f"  | {name} | {s:.1f} | {100 * s / row['wall_s']:.0f}% | {c:.1f} | "
                   f"{100 * c / cpu:.0f}% |")
  return "\n".join(lines)


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == "--child":
    _child(sys.argv[2:])
    return
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="quick_start.json")
  parser.add_argument("--install", action="store_true")
  args = parser.parse_args()
  rows = []
  install = _install_seconds() if args.install else None
  if install is not None:
    print(f"install: {install:.1f} s")
  for i in range(args.repeats):
    workdir = tempfile.mkdtemp(prefix="drojax-quick-")
    try:
      rows.append(_run_once(workdir))
    finally:
      shutil.rmtree(workdir, ignore_errors=True)
    print(_table(rows[-1], f"run {i + 1}/{args.repeats}"), flush=True)
  median = {"wall_s": statistics.median(r["wall_s"] for r in rows),
            "cpu_s": statistics.median(r["cpu_user_s"] + r["cpu_system_s"] for r in rows),
            "phases_s": {p: statistics.median(r["phases_s"].get(p, 0.0) for r in rows)
                         for p in PHASES},
            "phases_cpu_s": {p: statistics.median(r["phases_cpu_s"].get(p, 0.0) for r in rows)
                             for p in PHASES}}
  print(f"median of {len(rows)}: wall {median['wall_s']:.1f} s, CPU {median['cpu_s']:.1f} s; "
        + ", ".join(f"{p} {s:.1f} s ({median['phases_cpu_s'][p]:.1f} s CPU)"
                    for p, s in median["phases_s"].items()))
  import jax

  record = {"benchmark": "quick_start", "command": " ".join(["python"] + QUICK_START +
                                                            ["--compilation_cache_dir=none"]),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                        "python": platform.python_version(), "jax": jax.__version__},
            "install_s": install, "runs": rows, "median": median}
  with open(args.out, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
