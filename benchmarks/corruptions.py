"""Throughput of drojax's corruptions on this machine, and the time to make a CIFAR-C.

For every corruption, jits ``corrupt`` at each severity (static), times the compile and the
steady-state images/s on batches of ``--batch`` 32x32 images, and projects the time to
generate all 19 corruptions x 5 severities for ``--num`` images (10,000 = the CIFAR-10 test
set): compile + num / rate per cell. ``--full`` instead generates everything for ``--num``
images and reports the measured time.

Usage::

  python benchmarks/corruptions.py [--images PATH.npz] [--num 10000] [--batch 1000]
      [--severities 1,2,3,4,5] [--full] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from drojax import corruptions  # noqa: E402


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--images", default=None, help=".npz with 'images' uint8 NHWC (default: "
                  "random 32x32 images)")
  ap.add_argument("--num", type=int, default=10000, help="images per corruption x severity")
  ap.add_argument("--batch", type=int, default=1000)
  ap.add_argument("--severities", default="1,2,3,4,5")
  ap.add_argument("--names", default=",".join(corruptions.NAMES))
  ap.add_argument("--repeats", type=int, default=2, help="timed batches per cell")
  ap.add_argument("--full", action="store_true", help="generate all --num images per cell")
  ap.add_argument("--traced-severity", action="store_true",
                  help="compile once per corruption with the severity as a traced argument "
                       "(fewer compilations; filters sized by the documented bounds)")
  ap.add_argument("--json", default=None)
  args = ap.parse_args(argv)

  if args.images:
    with np.load(args.images, allow_pickle=False) as f:
      pool = f["images"][:args.batch]
  else:
    pool = np.random.default_rng(0).integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
  if len(pool) < args.batch:
    pool = np.concatenate([pool] * (-(-args.batch // len(pool))))[:args.batch]
  x = jax.device_put(pool.astype(np.float32) / 255.0)
  sevs = [int(s) for s in args.severities.split(",")]
  names = [n for n in args.names.split(",") if n]
  print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{'traced' if args.traced_severity else 'static'} severity, "
        f"jax {jax.__version__}, batch {args.batch}, {'measured' if args.full else 'projected'}"
        f" for {args.num} images x {len(sevs)} severities")
  print("| corruption | img/s (mean over severities) | compile s (total) | "
        f"{'measured' if args.full else 'projected'} s for {len(sevs)} x {args.num} |")
  print("|---|---|---|---|")
  grand = 0.0
  rows = []
  key = jax.random.key(0)
  for name in names:
    rates, compile_s, total_s = [], 0.0, 0.0
    traced = None
    for sev in sevs:
      if args.traced_severity:
        c = 0.0
        if traced is None:
          fn = jax.jit(lambda k, im, s, name=name: corruptions.corrupt(
              k, im, name=name, severity=s))
          t0 = time.perf_counter()
          traced = fn.lower(key, x, jnp.float32(1)).compile()
          c = time.perf_counter() - t0
        compiled = lambda k, im, traced=traced, sev=sev: traced(k, im, jnp.float32(sev))
      else:
        fn = jax.jit(lambda k, im, name=name, sev=sev: corruptions.corrupt(
            k, im, name=name, severity=sev))
        t0 = time.perf_counter()
        compiled = fn.lower(key, x).compile()
        c = time.perf_counter() - t0
      jax.block_until_ready(compiled(key, x))  # warm-up
      if args.full:
        t0 = time.perf_counter()
        for i in range(-(-args.num // args.batch)):
          out = compiled(jax.random.fold_in(key, i), x)
        jax.block_until_ready(out)
        run = time.perf_counter() - t0
        rate = args.num / run
      else:
        t0 = time.perf_counter()
        for i in range(args.repeats):
          out = compiled(jax.random.fold_in(key, i), x)
        jax.block_until_ready(out)
        rate = args.repeats * args.batch / (time.perf_counter() - t0)
        run = args.num / rate
      rates.append(rate)
      compile_s += c
      total_s += c + run
      rows.append({"benchmark": "corruptions", "corruption": name, "severity": sev,
                   "img_per_s": round(rate, 1), "compile_s": round(c, 2),
                   "batch": args.batch, "num": args.num, "full": bool(args.full),
                   "traced_severity": bool(args.traced_severity)})
    grand += total_s
    print(f"| {name} | {np.mean(rates):,.0f} | {compile_s:.1f} | {total_s:.1f} |", flush=True)
  print(f"\nTotal for {len(names)} corruptions x {len(sevs)} severities x {args.num} images: "
        f"{grand:.0f} s ({grand / 60:.1f} min), compile included.")
  if args.json:
    with open(args.json, "a") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
      f.write(json.dumps({"benchmark": "corruptions", "total_s": round(grand, 1),
                          "num": args.num, "severities": sevs, "full": bool(args.full)}) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
