r"""Evaluation wall time with 1 process and with 2 processes (``drojax.evaluate.Share``).

The whole protocol (clean, generated corruptions, PGD, the suite) of a SmallCNN (random
weights; the labels are its own predictions, so every image starts correct and part of them
survive each attack) on ``--images`` random 32x32 images, run by 1 process and by 2 processes
(``jax.distributed`` on localhost, gloo; each process evaluates every other batch), one CPU
device per process. Each run is fresh processes; each process evaluates twice and the second
call (compiled) is timed, as is the first (compilation, or loading from the persistent
compilation cache the runs share, included). The two set-ups alternate
``--rounds`` times, so load from other jobs on a shared machine hits both alike: compare the
ratio, not the absolute figures. The accuracies of the two must be equal (checked).

  python benchmarks/eval_processes.py --images 128 --batch 16 --rounds 2 \
      --json /tmp/eval_processes.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402


def _worker(index: int, count: int, address: str, images: int, batch: int) -> None:
  import jax

  if count > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, count, index, initialization_timeout=120)
  import numpy as np

  from drojax import evaluate as ev
  from drojax import models

  model = models.get_model("small_cnn", num_classes=10, width=8)
  x = np.random.default_rng(0).uniform(size=(images, 32, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  bound = ev.BoundModel(lambda v, b: model.apply(v, b, train=False), variables)
  y = np.asarray(ev.predict(bound, x, batch_size=batch, progress=False))
  config = ev.EvalConfig(corruption_names=["contrast", "gaussian_noise"], severities=[3],
                         eps=[1 / 255], attack="suite", num_steps=10, num_queries=50,
                         batch_size=batch)
  pgd = ev.EvalConfig(corruptions=None, eps=[1 / 255], num_steps=10, batch_size=batch)
  share = ev.Share(index, count)
  seconds, results = [], None
  for _ in range(2):
    t0 = time.perf_counter()
    results = ev.evaluate(bound, x, y, config=config, progress=False, share=share)
    results["pgd"] = ev.evaluate(bound, x, y, config=pgd, progress=False,
                                 share=share)["adversarial_accuracy"]
    seconds.append(time.perf_counter() - t0)
  print(json.dumps({"seconds": seconds, "results": results}), flush=True)


def _run(count: int, images: int, batch: int, cache: str) -> dict:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1", JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  t0 = time.perf_counter()
  procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), str(count), address,
                             str(images), str(batch)], stdout=subprocess.PIPE, env=env,
                            text=True) for i in range(count)]
  outs = [p.communicate(timeout=3600)[0] for p in procs]
  if any(p.returncode for p in procs):
    raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
  got = [json.loads(out.strip().splitlines()[-1]) for out in outs]
  return {"processes": count, "wall_s": time.perf_counter() - t0,
          "first_s": max(g["seconds"][0] for g in got),
          "second_s": max(g["seconds"][1] for g in got), "results": got[0]["results"]}


def main():
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    index, count, address, images, batch = sys.argv[2:7]
    return _worker(int(index), int(count), address, int(images), int(batch))
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--images", type=int, default=128)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  for name in ("images", "batch", "rounds"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  runs = []
  cache = tempfile.mkdtemp(prefix="eval_processes_cache_")  # later runs load, not compile
  for r in range(args.rounds):
    for count in (1, 2):
      run = _run(count, args.images, args.batch, cache)
      run["round"] = r + 1
      runs.append(run)
      print(f"round {r + 1}, {count} process(es): evaluation {run['second_s']:.1f} s "
            f"(first call {run['first_s']:.1f} s)", file=sys.stderr, flush=True)
  keys = ("clean_accuracy", "corruption_accuracy", "adversarial_by_attack", "pgd")
  if any({k: run["results"][k] for k in keys} != {k: runs[0]["results"][k] for k in keys}
         for run in runs):
    raise SystemExit("the 1- and 2-process evaluations differ")
  rows = []
  for count in (1, 2):
    mine = [run for run in runs if run["processes"] == count]
    rows.append({"processes": count, "images": args.images, "batch": args.batch,
                 "rounds": args.rounds,
                 "eval_s_median": round(statistics.median(m["second_s"] for m in mine), 2),
                 "first_call_s_median": round(statistics.median(m["first_s"] for m in mine), 2),
                 "eval_images_per_process": mine[0]["results"]["eval_images_per_process"],
                 "clean": mine[0]["results"]["clean_accuracy"],
                 "suite": mine[0]["results"]["adversarial_accuracy"],
                 "utc": _common.utc_now(), **_common.machine_info()})
  rows[1]["speedup"] = round(rows[0]["eval_s_median"] / rows[1]["eval_s_median"], 2)
  print(_common.markdown_table(rows, ["processes", "eval_images_per_process", "eval_s_median",
                                      "first_call_s_median", "speedup", "suite"]))
  if args.json:
    _common.append_jsonl(args.json, rows)


if __name__ == "__main__":
  main()
