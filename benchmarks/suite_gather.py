r"""The suite over a test set: each attack on a masked full batch vs on the gathered survivors.

Trains a small model (the robustness study's Fashion-MNIST config, ``dro`` at ``--rho``, so
that part of the images survive APGD-CE) with the CLI's runner, then runs the suite (APGD-CE,
APGD-T, Square) on the first ``--images`` test images at each ``--eps`` two ways, one after
the other in the same process:

* ``masked``: :func:`drojax.attacks.robust_suite` per batch of ``--batch`` (every attack
  computes on the whole batch; an image broken earlier only stops counting), what the
  evaluator did before;
* ``gathered``: :func:`drojax.evaluate.auto_attack_accuracy` (each attack only on the images
  every earlier one left robust, gathered into new batches), what the evaluator does now.

Wall time includes compilation in the first call at the first eps (eps is traced, so later
eps reuse the programs, except that the gathered form compiles each new batch shape: up to 4
per attack; the masked one compiles one program); ``--repeats 2`` adds a second call of each.
The two use different random keys per batch, so their robust accuracies (in %) agree up to
the attacks' randomness, not to the digit.

  python benchmarks/suite_gather.py --data_dir ../shared/data --width 8 --epochs 1 \
      --images 200 --batch 100 --json /tmp/suite_gather.jsonl
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402


def _masked(bound, x, y, *, eps, batch, num_steps, num_targets, num_queries, key):
  """Robust fraction after each attack, ``robust_suite`` on each batch (the last padded)."""
  import jax
  import numpy as np

  from drojax import attacks
  from drojax.evaluate import batching

  logits_fn = functools.partial(bound.apply_fn, bound.variables)
  n = x.shape[0]
  counts = {a: 0 for a in attacks.SUITE_ATTACKS}
  for b, (s, t) in enumerate(batching.batches(n, batch)):
    xb = batching.float_batch(x, s, t, batch)
    yb = batching.padded(y[s:t].astype(np.int32), batch)
    r = attacks.robust_suite(jax.random.fold_in(key, b), logits_fn, xb, yb, eps=eps,
                             num_steps=num_steps, num_targets=num_targets,
                             num_queries=num_queries)
    for a in counts:
      counts[a] += int(np.sum(np.asarray(r[a])[: t - s]))
  return {a: c / n for a, c in counts.items()}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data_dir", required=True, help="folder with fashion_mnist_{train,test}.npz")
  p.add_argument("--width", type=int, default=8)
  p.add_argument("--epochs", type=int, default=1)
  p.add_argument("--train", type=int, default=0, help="training subset (0 = all 30k)")
  p.add_argument("--rho", type=float, default=0.08)
  p.add_argument("--train_batch", type=int, default=128)
  p.add_argument("--images", type=int, default=200)
  p.add_argument("--batch", type=int, default=100)
  p.add_argument("--eps", type=float, nargs="+", default=[8.0], help="in 1/255")
  p.add_argument("--apgd_steps", type=int, default=100)
  p.add_argument("--targets", type=int, default=9)
  p.add_argument("--square_queries", type=int, default=1000)
  p.add_argument("--repeats", type=int, default=1)
  p.add_argument("--json", default=None)
  args = p.parse_args()
  for name in ("width", "epochs", "images", "batch", "apgd_steps", "targets", "square_queries",
               "repeats", "train_batch"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.train < 0 or args.rho < 0 or any(e < 0 for e in args.eps):
    p.error("--train, --rho and --eps must be >= 0")

  import jax

  from drojax import evaluate as ev
  from experiments import flag_defs, robustness_study, train

  scale = robustness_study.SCALES["smoke"].replace(
      model="small_cnn", width=args.width, epochs=args.epochs, train=args.train,
      test_images=args.images, apgd_steps=args.apgd_steps, square_queries=args.square_queries,
      batch_size=args.train_batch, eval_batch=args.batch)
  config = robustness_study._config("dro", 0, scale, rho=args.rho)
  with config.unlocked():
    config.eval.adv_eps = ()
  rows = []

  def measure(trained, test_ds):
    bound = train.bound_model(trained)
    x, y = test_ds.images[: args.images], test_ds.labels[: args.images]
    key = ev.eval_key()
    for e in args.eps:
      forms = {
          "masked": lambda: _masked(bound, x, y, eps=e / 255, batch=args.batch,
                                    num_steps=args.apgd_steps, num_targets=args.targets,
                                    num_queries=args.square_queries, key=key),
          "gathered": lambda: {a: v[ev.eps_key(e / 255)] for a, v in ev.auto_attack_accuracy(
              bound, x, y, eps=[e / 255], num_steps=args.apgd_steps, num_targets=args.targets,
              num_queries=args.square_queries, key=key, batch_size=args.batch,
              progress=False).items()},
      }
      for rep in range(args.repeats):
        for form, fn in forms.items():
          t0 = time.perf_counter()
          acc = fn()
          wall = time.perf_counter() - t0
          row = {"form": form, "eps_255": e, "call": rep + 1,
                 "wall_s": round(wall, 2), "images": len(y), "batch": args.batch,
                 "apgd_steps": args.apgd_steps, "targets": args.targets,
                 "square_queries": args.square_queries, "width": args.width,
                 **{f"robust_{a}": round(100 * acc[a], 2) for a in acc},
                 "utc": _common.utc_now(), **_common.machine_info()}
          rows.append(row)
          print(f"{form} eps {e}/255 (call {row['call']}): {wall:.1f} s, robust "
                + ", ".join(f"{a} {100 * v:.1f}%" for a, v in acc.items()),
                file=sys.stderr, flush=True)
    return {}

  with tempfile.TemporaryDirectory() as work:
    t0 = time.perf_counter()
    train.train_and_evaluate(flag_defs.set_run_fields(config, data_dir=args.data_dir), work,
                             extra_evaluation=measure)
    print(f"train + measure: {time.perf_counter() - t0:.0f} s on {jax.devices()[0].device_kind}",
          file=sys.stderr)
  for e in args.eps:
    for call in range(1, args.repeats + 1):
      pair = {r["form"]: r for r in rows if r["eps_255"] == e and r["call"] == call}
      if len(pair) == 2:
        pair["gathered"]["speedup_vs_masked"] = round(
            pair["masked"]["wall_s"] / pair["gathered"]["wall_s"], 2)
  print(_common.markdown_table(
      rows, ["form", "eps_255", "call", "wall_s", "speedup_vs_masked", "robust_apgd_ce",
             "robust_apgd_t", "robust_square"]))
  if args.json:
    _common.append_jsonl(args.json, rows)


if __name__ == "__main__":
  main()
