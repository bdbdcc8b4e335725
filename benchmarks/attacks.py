r"""PGD step-loop form: unrolled Python loop vs ``lax.fori_loop`` inside ``jit``.

Runs both forms side by side in one process on the same small CNN (3 conv layers of
``--width`` channels, stride 2, global pool, dense; CIFAR-sized inputs) and prints compile
time, run time per attack and images/s. Ratios are what to read: other processes may load the
CPU, so absolute times are noisy.

  python benchmarks/attacks.py --batch 128 --steps 10 --repeats 3 --json /tmp/attacks.jsonl
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drojax import attacks  # noqa: E402


def _init(key, width, num_classes=10):
  ks = jax.random.split(key, 4)
  conv = lambda k, cin, cout: jax.random.normal(k, (3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5
  return {"c1": conv(ks[0], 3, width), "c2": conv(ks[1], width, 2 * width),
          "c3": conv(ks[2], 2 * width, 4 * width),
          "w": jax.random.normal(ks[3], (4 * width, num_classes)) * 0.1}


def _apply(params, x):
  h = x
  for name in ("c1", "c2", "c3"):
    h = jax.lax.conv_general_dilated(h, params[name], (2, 2), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h)
  return h.mean(axis=(1, 2)) @ params["w"]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default=None, help="append one JSON line per loop form")
  args = p.parse_args()

  params = _init(jax.random.key(0), args.width)
  x = jax.random.uniform(jax.random.key(1), (args.batch, 32, 32, 3))
  y = jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)

  rows = []
  fns = {}
  for unroll in (True, False):
    @functools.partial(jax.jit, static_argnames=())
    def attack(params, key, x, y, unroll=unroll):
      f = functools.partial(_apply, params)
      return attacks.pgd(key, f, x, y, eps=8 / 255, step_size=2 / 255, num_steps=args.steps,
                         unroll=unroll)
    t0 = time.perf_counter()
    attack(params, jax.random.key(0), x, y).block_until_ready()
    fns[unroll] = (attack, time.perf_counter() - t0)
  # Interleave the timed runs so both forms see the same background load.
  times = {True: [], False: []}
  for r in range(args.repeats):
    for unroll in (True, False):
      attack = fns[unroll][0]
      t0 = time.perf_counter()
      attack(params, jax.random.key(r + 1), x, y).block_until_ready()
      times[unroll].append(time.perf_counter() - t0)
  base = min(times[True])
  print(f"backend={jax.default_backend()} batch={args.batch} width={args.width} "
        f"steps={args.steps} repeats={args.repeats}")
  print(f"{'loop':>10} | {'compile s':>9} | {'attack s (min)':>14} | {'img/s':>8} | {'time / unrolled':>15}")
  for unroll in (True, False):
    t = min(times[unroll])
    row = {"benchmark": "pgd_loop", "backend": jax.default_backend(),
           "loop": "unrolled" if unroll else "fori_loop", "batch": args.batch,
           "width": args.width, "steps": args.steps, "compile_s": round(fns[unroll][1], 3),
           "attack_s": round(t, 4), "img_per_s": round(args.batch / t, 1),
           "ratio_to_unrolled": round(t / base, 3)}
    rows.append(row)
    print(f"{row['loop']:>10} | {row['compile_s']:9.2f} | {t:14.3f} | {row['img_per_s']:8.1f} | "
          f"{row['ratio_to_unrolled']:15.2f}")
  if args.json:
    with open(args.json, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
