r"""Attack costs. Two modes:

``--mode throughput``: images/s of PGD-20, APGD-CE-100, APGD-T (9 targets x 100 steps),
FAB-T (9 targets x 100 steps), Square-5000 (L-inf) and AutoAttack's standard suite (APGD-CE,
APGD-T, FAB-T, Square) on PreActResNet-18 (``--width``,
32x32x3, 10 classes), the suite's time per 1,000 images, and Square-L2-5000 (L2 eps 0.5).
The model's logits get a constant +1e4 on the label so no image is ever misclassified: every
attack runs its full budget (no early exit), the cost for a model that withstands every
attack, an upper bound (a model the first attack breaks costs less). The per-iteration cost
is measured at two reduced counts (a linear fit: fixed cost + per-step cost) and extrapolated
to the full counts; PGD-20 is timed in full.

  python benchmarks/attacks.py --mode throughput --width 16 --batch 32 --json /tmp/a.jsonl

``--fast_input_grad`` builds the model with ``drojax.models.conv`` (what the evaluator uses).

``--mode loop`` (the default): PGD's step-loop form, unrolled Python loop vs
``lax.fori_loop`` inside ``jit``, each with ``lax.conv_general_dilated`` and with
``drojax.models.conv.conv_general_dilated`` (whose input gradient keeps XLA:CPU's fast
convolution inside loops).

Runs the four forms side by side in one process on the same small CNN (3 conv layers of
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
from drojax.models import conv as drojax_conv  # noqa: E402

CONVS = {"lax": jax.lax.conv_general_dilated, "drojax": drojax_conv.conv_general_dilated}


def _init(key, width, num_classes=10):
  ks = jax.random.split(key, 4)
  conv = lambda k, cin, cout: jax.random.normal(k, (3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5
  return {"c1": conv(ks[0], 3, width), "c2": conv(ks[1], width, 2 * width),
          "c3": conv(ks[2], 2 * width, 4 * width),
          "w": jax.random.normal(ks[3], (4 * width, num_classes)) * 0.1}


def _apply(params, x, conv="lax"):
  h = x
  for name in ("c1", "c2", "c3"):
    h = CONVS[conv](h, params[name], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h)
  return h.mean(axis=(1, 2)) @ params["w"]


def _throughput(args):
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from drojax import models  # pylint: disable=import-outside-toplevel
  from drojax.attacks import auto, fab_attack, square_attack  # pylint: disable=import-outside-toplevel

  model = models.get_model("preact_resnet18", num_classes=10, width=args.width,
                           fast_input_grad=args.fast_input_grad)
  b = args.batch
  x = jax.random.uniform(jax.random.key(1), (b, 32, 32, 3))
  y = jax.random.randint(jax.random.key(2), (b,), 0, 10)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  # Everything enters the jitted function as an argument: closed-over arrays would be
  # constants that XLA folds (the clean forward pass precomputed at compile time).

  def attack(kind, n):
    def run(k, v, x, y):
      never_fooled = 1e4 * jax.nn.one_hot(y, 10)
      f = lambda z: model.apply(v, z, train=False) + never_fooled  # noqa: E731
      eps = jnp.float32(8 / 255)
      on = jnp.ones(x.shape[0], bool)
      if kind == "pgd":
        return attacks.pgd(k, f, x, y, eps=eps, step_size=eps / 4, num_steps=n)
      if kind == "apgd_ce":
        return auto._apgd_runs(k, f, x, y, eps, on, norm="linf", num_steps=n, loss="ce",
                               restarts=1, num_targets=0)[1]
      if kind == "apgd_t1":  # one target; APGD-T is num_targets of these
        return auto._apgd_runs(k, f, x, y, eps, on, norm="linf", num_steps=n,
                               loss="dlr_targeted", restarts=1, num_targets=1)[1]
      if kind == "fab_t1":  # one target; FAB-T is num_targets of these
        return fab_attack._fab_runs(k, f, x, y, eps, on, 0.1, 1.05, 0.9, norm="linf",
                                    num_steps=n, targeted=True, num_targets=1, restarts=1,
                                    minimal=False)[1]
      norm = "l2" if kind == "square_l2" else "linf"
      eps = jnp.float32(0.5) if norm == "l2" else eps  # L2: AutoAttack's CIFAR budget
      return square_attack._square_run(k, f, x, y, eps, on, norm=norm, num_queries=n,
                                       p_init=0.8)[1]
    fn = jax.jit(run)
    return lambda k: fn(k, variables, x, y)

  def make(kind, n):
    fn = attack(kind, n)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(0)))
    compile_s = time.perf_counter() - t0
    ts = []
    for r in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(jax.random.key(r + 1)))
      ts.append(time.perf_counter() - t0)
    return min(ts), compile_s

  lo, hi = args.fit_steps
  qlo, qhi = args.fit_queries
  rows = []
  est = {}
  t, c = make("pgd", 20)
  est["PGD-20"] = t
  rows.append({"attack": "PGD-20", "measured": "20 steps", "compile_s": c, "batch_s": t})
  for kind, name, full, (a, z) in (("apgd_ce", "APGD-CE-100", 100, (lo, hi)),
                                   ("apgd_t1", "APGD-T (1 target)", 100, (lo, hi)),
                                   ("fab_t1", "FAB-T (1 target)", 100, (lo, hi)),
                                   ("square", "Square-5000", 5000, (qlo, qhi)),
                                   ("square_l2", "Square-L2-5000", 5000, (qlo, qhi))):
    ta, ca = make(kind, a)
    tz, _ = make(kind, z)
    per = (tz - ta) / (z - a)
    fixed = max(ta - per * a, 0.0)
    est[name] = fixed + per * full
    rows.append({"attack": name, "measured": f"{a} and {z}", "compile_s": ca,
                 "batch_s": est[name], "per_iter_ms": 1e3 * per})
  est["APGD-T (9 x 100)"] = 9 * est["APGD-T (1 target)"]
  rows.append({"attack": "APGD-T (9 x 100)", "measured": "9 x the 1-target fit",
               "batch_s": est["APGD-T (9 x 100)"]})
  est["FAB-T (9 x 100)"] = 9 * est["FAB-T (1 target)"]
  rows.append({"attack": "FAB-T (9 x 100)", "measured": "9 x the 1-target fit",
               "batch_s": est["FAB-T (9 x 100)"]})
  suite_s = (est["APGD-CE-100"] + est["APGD-T (9 x 100)"] + est["FAB-T (9 x 100)"]
             + est["Square-5000"])
  rows.append({"attack": "suite", "measured": "sum of the four", "batch_s": suite_s})
  print(f"backend={jax.default_backend()} PreActResNet-18 width={args.width} batch={b} "
        f"32x32x3, repeats={args.repeats} (min), full budget (no early exit), "
        f"fast_input_grad={args.fast_input_grad}")
  print(f"{'attack':>20} | {'measured at':>20} | {'compile s':>9} | {'batch s':>9} | "
        f"{'img/s':>8} | {'ms/iter':>8}")
  for row in rows:
    row.update(benchmark="attack_throughput", backend=jax.default_backend(), width=args.width,
               batch=b, img_per_s=b / row["batch_s"], fast_input_grad=args.fast_input_grad)
    print(f"{row['attack']:>20} | {row['measured']:>20} | {row.get('compile_s', float('nan')):9.1f} | "
          f"{row['batch_s']:9.2f} | {row['img_per_s']:8.3f} | "
          f"{row.get('per_iter_ms', float('nan')):8.2f}")
  per_1000 = suite_s * 1000 / b
  print(f"suite time per 1,000 images (extrapolated, no early exit): {per_1000:.0f} s "
        f"= {per_1000 / 3600:.2f} h")
  rows.append({"benchmark": "attack_throughput", "attack": "suite_per_1000_images_s",
               "value": per_1000, "width": args.width, "batch": b})
  if args.json:
    with open(args.json, "a") as fh:
      for row in rows:
        fh.write(json.dumps(row) + "\n")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--mode", choices=("loop", "throughput"), default="loop")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--fit_steps", type=int, nargs=2, default=(4, 12),
                 help="throughput: the two APGD step counts of the linear fit")
  p.add_argument("--fit_queries", type=int, nargs=2, default=(20, 100),
                 help="throughput: the two Square query counts of the linear fit")
  p.add_argument("--fast_input_grad", action="store_true",
                 help="throughput: the model's convolutions from drojax.models.conv")
  p.add_argument("--json", default=None, help="append one JSON line per row")
  args = p.parse_args()
  if args.mode == "throughput":
    _throughput(args)
    return

  params = _init(jax.random.key(0), args.width)
  x = jax.random.uniform(jax.random.key(1), (args.batch, 32, 32, 3))
  y = jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)

  rows = []
  fns = {}
  forms = [(unroll, conv) for conv in ("lax", "drojax") for unroll in (True, False)]
  for unroll, conv in forms:
    @jax.jit
    def attack(params, key, x, y, unroll=unroll, conv=conv):
      f = functools.partial(_apply, params, conv=conv)
      return attacks.pgd(key, f, x, y, eps=8 / 255, step_size=2 / 255, num_steps=args.steps,
                         unroll=unroll)
    t0 = time.perf_counter()
    attack(params, jax.random.key(0), x, y).block_until_ready()
    fns[unroll, conv] = (attack, time.perf_counter() - t0)
  # Interleave the timed runs so every form sees the same background load.
  times = {form: [] for form in forms}
  for r in range(args.repeats):
    for form in forms:
      attack = fns[form][0]
      t0 = time.perf_counter()
      attack(params, jax.random.key(r + 1), x, y).block_until_ready()
      times[form].append(time.perf_counter() - t0)
  base = min(times[True, "lax"])
  print(f"backend={jax.default_backend()} batch={args.batch} width={args.width} "
        f"steps={args.steps} repeats={args.repeats}")
  print(f"{'loop':>10} | {'conv':>7} | {'compile s':>9} | {'attack s (min)':>14} | "
        f"{'img/s':>8} | {'time / unrolled lax':>19}")
  for unroll, conv in forms:
    t = min(times[unroll, conv])
    row = {"benchmark": "pgd_loop", "backend": jax.default_backend(),
           "loop": "unrolled" if unroll else "fori_loop", "conv": conv, "batch": args.batch,
           "width": args.width, "steps": args.steps,
           "compile_s": round(fns[unroll, conv][1], 3), "attack_s": round(t, 4),
           "img_per_s": round(args.batch / t, 1), "ratio_to_unrolled": round(t / base, 3)}
    rows.append(row)
    print(f"{row['loop']:>10} | {conv:>7} | {row['compile_s']:9.2f} | {t:14.3f} | "
          f"{row['img_per_s']:8.1f} | {row['ratio_to_unrolled']:19.2f}")
  if args.json:
    with open(args.json, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
