"""How close each W-DRO penalty mode's parameter gradient is to the exact grad of grad.

On a real model (PreActResNet-18 by default, train-mode BatchNorm, freshly initialized) and a
batch of images, this computes the parameter gradient of the penalty term
(``total - mean_loss`` of ``drojax.wdro.wdro_total``, rho = 1) and of the whole objective in
each mode, and reports the cosine similarity and the relative error of each to ``exact``.
``finite_difference`` is run at each ``--fd_steps`` value (relative steps, see ``wdro_total``).

Usage::

  python benchmarks/penalty_accuracy.py --width 16 --batch 128 \\
      --images ../shared/data/cifar10_test_lossless_first1000.npz --json OUT.jsonl
  python benchmarks/penalty_accuracy.py --float64 --batch 32 --fd_steps 1e-6,1e-5,1e-4,1e-3 ...

``--images``: an ``.npz`` with ``images`` ``[N, 32, 32, 3]`` uint8 and ``labels`` ``[N]``; without
it (or when the file is missing) uniform random images and labels are used.
"""

from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(1, os.path.dirname(_HERE))  # the repository root, for `import drojax`
import _common  # noqa: E402  pylint: disable=wrong-import-position

NUM_CLASSES = 10


def load_batch(path: str | None, batch: int, seed: int):
  """``(images [B, 32, 32, 3] float32 in [0, 1], labels [B] int32, source)``."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  if path and os.path.exists(path):
    with np.load(path) as data:
      if "images" not in data or "labels" not in data:
        raise SystemExit(f"--images {path}: expected arrays 'images' and 'labels', found "
                         f"{sorted(data.keys())}")
      if len(data["labels"]) < batch:
        raise SystemExit(f"--images {path} has {len(data['labels'])} images, fewer than --batch "
                         f"{batch}")
      idx = np.random.default_rng(seed).choice(len(data["labels"]), batch, replace=False)
      return (data["images"][idx].astype(np.float32) / 255.0,
              data["labels"][idx].astype(np.int32), os.path.basename(path))
  if path:
    _common.log(f"--images {path} not found: using random images")
  rng = np.random.default_rng(seed)
  return (rng.random((batch, 32, 32, 3), np.float32),
          rng.integers(0, NUM_CLASSES, batch).astype(np.int32), "random")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", default="preact_resnet18")
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--q", type=float, default=1.0)
  p.add_argument("--fd_steps", default="1e-3,5e-3,2e-2",
                 help="comma list of relative finite-difference steps")
  p.add_argument("--images", default=None, help=".npz with 'images' and 'labels' (else random)")
  p.add_argument("--float64", action="store_true",
                 help="compute in float64 (jax_enable_x64): separates rounding from truncation")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default=None, help="append one JSON object per row to this file")
  args = p.parse_args(argv)
  try:
    args.fd_steps = [float(s) for s in args.fd_steps.split(",") if s]
  except ValueError:
    p.error(f"--fd_steps must be a comma list of numbers, got {args.fd_steps!r}")
  if not args.fd_steps or min(args.fd_steps) <= 0:
    p.error(f"--fd_steps must be positive, got {args.fd_steps}")
  for name in ("width", "batch"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from drojax import losses, models, wdro  # pylint: disable=import-outside-toplevel

  if args.float64:
    jax.config.update("jax_enable_x64", True)
  dtype = jnp.float64 if args.float64 else jnp.float32
  images, labels, source = load_batch(args.images, args.batch, args.seed)
  x, y = jnp.asarray(images, dtype), jax.nn.one_hot(labels, NUM_CLASSES, dtype=dtype)
  model = models.get_model(args.model, num_classes=NUM_CLASSES, width=args.width, dtype=dtype)
  variables = jax.jit(lambda k: model.init(k, x[:2], train=False))(jax.random.key(args.seed))
  variables = jax.tree_util.tree_map(lambda a: a.astype(dtype), variables)

  def loss_fn_of(params):
    def loss_fn(xx):
      logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, xx,
                              train=True, mutable=["batch_stats"])
      return losses.cross_entropy(logits, y)
    return loss_fn

  def gradients(mode: str, fd_step: float):
    def terms(params):
      total, aux = wdro.wdro_total(None, loss_fn_of(params), x, rho=1.0, q=args.q,
                                   penalty_mode=mode, fd_step=fd_step)
      return total - aux.mean_loss, total
    flat = lambda t: np.concatenate([np.asarray(a, np.float64).ravel()
                                     for a in jax.tree_util.tree_leaves(t)])
    penalty_grad, total_grad = jax.jit(jax.jacrev(terms))(variables["params"])
    return flat(penalty_grad), flat(total_grad)

  def compare(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), float(
        np.linalg.norm(a - b) / np.linalg.norm(b))

  exact_penalty, exact_total = gradients("exact", wdro.DEFAULT_FD_STEP)
  runs = [("forward_over_reverse", None)] + [("finite_difference", s) for s in args.fd_steps]
  rows = []
  for mode, step in runs:
    _common.log(f"{mode} {step or ''}")
    penalty, total = gradients(mode, step or wdro.DEFAULT_FD_STEP)
    cos_p, err_p = compare(penalty, exact_penalty)
    cos_t, err_t = compare(total, exact_total)
    rows.append({"benchmark": "penalty_accuracy", "model": args.model, "width": args.width,
                 "batch": args.batch, "images": source, "q": args.q, "mode": mode,
                 "dtype": "float64" if args.float64 else "float32",
                 "fd_step": step, "cos_penalty_grad": cos_p, "rel_err_penalty_grad": err_p,
                 "cos_total_grad": cos_t, "rel_err_total_grad": err_t,
                 "time": _common.utc_now(), **_common.machine_info()})
  columns = ["cos_penalty_grad", "rel_err_penalty_grad", "cos_total_grad", "rel_err_total_grad"]
  shown = [{"mode": r["mode"], "fd_step": f"{r['fd_step']:g}" if r["fd_step"] else None,
            **{c: f"{r[c]:.4f}" for c in columns}} for r in rows]
  print(_common.markdown_table(shown, ["mode", "fd_step"] + columns))
  _common.append_jsonl(args.json, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
