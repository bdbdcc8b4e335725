r"""Diagnosis of the coloured benchmarks outside the training CLI: the papers' own Colored
MNIST recipe (Arjovsky et al. 2019; Krueger et al. 2021), full batch, on our data.

A 2-hidden-layer ReLU MLP on the red and green channels (Fashion-MNIST average-pooled 28 -> 14
as in the papers), Adam, L2 on the weights, 501 full-batch steps; V-REx / IRMv1's penalty
weight is 1 before ``anneal`` and ``weight`` after, the objective then divided by ``weight``.
Prints one JSON line per run: train / validation / test (accuracy, worst-group accuracy) in %.
``docs/group_shift.md`` records what it found and the commands::

  python -m experiments.colored_mnist_recipe --benchmark=colored_digits --run='{"method": "irm"}'
  python -m experiments.colored_mnist_recipe --benchmark=colored_fashion_mnist \
      --data_dir=../shared/data --num_train=8000 --run='{"method": "erm"}' \
      --run='{"method": "vrex"}'

``--run`` (repeated): one JSON object per run (``method``: erm | irm | vrex; optional
``steps``, ``anneal``, ``weight``, ``l2``, ``lr``, ``hidden``, ``seed``, ``grey``: the colour
channels summed, a shape-only oracle).
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags

from experiments import cli, flag_defs

FLAGS = flags.FLAGS


def load(name: str, split: str, num_train: int, data_dir: str | None, *, grey: bool = False):
  """``(x [N, D], labels, groups, environments)``: red and green channels, flattened."""
  import jax.numpy as jnp

  from drojax.data import group_shift as gsd

  ds = (gsd.colored_digits(split) if name == "colored_digits" else
        gsd.load_group_shift(name, split, data_dir=data_dir)).dataset
  x = ds.images[..., :2].astype(np.float32) / 255.0
  if x.shape[1] == 28:
    x = x.reshape(len(x), 14, 2, 14, 2, 2).mean((2, 4))
  if grey:
    x = x.sum(-1, keepdims=True)
  idx = np.arange(len(x))
  if split == "train" and num_train:
    idx = np.random.default_rng(0).permutation(len(x))[:num_train]
  return tuple(jnp.asarray(a[idx]) for a in (x.reshape(len(x), -1), ds.labels, ds.groups,
                                              ds.environments))


def run(splits, method: str, *, steps: int = 501, anneal: int = 190, weight: float = 1e4,
        l2: float = 1.1e-3, lr: float = 5e-4, hidden: int = 256, seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp
  import optax

  from drojax import groups as G

  x, y, _, env = splits["train"]
  masks = [np.asarray(env) == e for e in (0, 1)]

  def apply(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]

  def objective(p, step):
    z = apply(p, x)
    ce = optax.softmax_cross_entropy_with_integer_labels(z, y)
    risks = jnp.stack([ce[m].mean() for m in masks])
    if method == "erm":
      penalty = 0.0
    elif method == "vrex":
      penalty = G.vrex_penalty(risks)
    else:
      penalty = jnp.stack([G.irm_penalty(z[m], y[m]) for m in masks]).mean()
    lam = 1.0 if method == "erm" else jnp.where(step >= anneal, weight, 1.0)
    norm = sum(jnp.sum(p[k] ** 2) for k in ("w1", "w2", "w3"))
    return (risks.mean() + l2 * norm + lam * penalty) / jnp.maximum(lam, 1.0)

  keys = jax.random.split(jax.random.key(seed), 3)
  dims = [x.shape[1], hidden, hidden, 2]
  params = {}
  for i, k in enumerate(keys):
    params[f"w{i + 1}"] = jax.random.normal(k, dims[i:i + 2]) * np.sqrt(2 / sum(dims[i:i + 2]))
    params[f"b{i + 1}"] = jnp.zeros(dims[i + 1])
  opt = optax.adam(lr)

  def step(carry, t):
    p, s = carry
    u, s = opt.update(jax.grad(objective)(p, t), s, p)
    return (optax.apply_updates(p, u), s), None

  (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(
      (params, opt.init(params)))
  out = {}
  for name, (xs, ys, gs, _) in splits.items():
    pred, ys, gs = np.asarray(apply(params, xs).argmax(-1)), np.asarray(ys), np.asarray(gs)
    worst = min(np.mean(pred[gs == g] == ys[gs == g]) for g in np.unique(gs))
    out[name] = [round(100 * float(np.mean(pred == ys)), 1), round(100 * float(worst), 1)]
  return out


METHODS = ("erm", "irm", "vrex")
KEYS = ("method", "steps", "anneal", "weight", "l2", "lr", "hidden", "seed", "grey")


def main(argv, overrides):
  del argv
  if overrides:
    raise cli.UsageError(f"this command takes no --config.* flags, got {overrides[0][0]}")
  flag_defs.check_choice(FLAGS.benchmark, ("colored_digits", "colored_fashion_mnist"),
                         "--benchmark")
  if FLAGS.num_train < 0:
    raise cli.UsageError(f"--num_train must be >= 0, got {FLAGS.num_train}")
  specs = []
  for spec in FLAGS.run:
    try:
      kw = json.loads(spec)
    except json.JSONDecodeError:
      raise cli.UsageError(f"each run must be a JSON object, got {spec!r}") from None
    if not isinstance(kw, dict) or set(kw) - set(KEYS):
      raise cli.UsageError(f"each run must be a JSON object with keys from {KEYS}, got {spec!r}")
    flag_defs.check_choice(kw.get("method", "erm"), METHODS, "method")
    specs.append(kw)
  if not specs:
    raise cli.UsageError("give at least one --run, e.g. --run='{\"method\": \"irm\"}'")
  for kw in specs:
    shown = dict(kw)
    grey = kw.pop("grey", False)
    splits = {s: load(FLAGS.benchmark, s, FLAGS.num_train, FLAGS.data_dir or None, grey=grey)
              for s in ("train", "validation", "test")}
    start = time.time()
    result = run(splits, kw.pop("method", "erm"), **kw)
    print(json.dumps({"benchmark": FLAGS.benchmark, "num_train": FLAGS.num_train, **shown,
                      **result, "seconds": round(time.time() - start, 1)}), flush=True)


if __name__ == "__main__":
  flags.DEFINE_string("benchmark", "colored_digits", "colored_digits | colored_fashion_mnist")
  flags.DEFINE_integer("num_train", 0, "Training subset size (0: all; a fixed seeded subset).")
  flags.DEFINE_multi_string("run", [], "One run's settings as a JSON object (repeatable).")
  flag_defs.define("data_dir")
  cli.run_main(main)
