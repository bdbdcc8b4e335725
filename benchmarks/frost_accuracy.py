"""Is our frost as hard as the maker's, for a classifier? (issue 16; ~1 min on an H100)

Trains small_cnn (width 16, ERM, SGD momentum 0.9, lr 0.05 cosine, wd 5e-4, batch 128, random
crop + flip, 5 epochs) on the 50k CIFAR-10 training images, then prints accuracy (%) on

* the first 200 official test images: clean, the maker's frost (shared/reference npz), our
  default procedural frost (drojax.corruptions.corrupt, evaluation key);
* the first 1000: clean and our procedural frost.

Run from a drojax checkout:  python benchmarks/frost_accuracy.py [--epochs 5] [--train_limit N]
[--shared ../shared] [--json OUT.json]
(the issue's numbers on 1000 images: maker 75.2 65.9 54.7 49.2 42.2, old procedural 45.2 30.9
22.1 21.0 16.3). Needs the shared data folder (``--shared``: ``data/cifar10_train.npz``,
``data/cifar10_test_lossless_first1000.npz``, ``reference/frost_reference_first200.npz``).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from drojax import corruptions  # noqa: E402
from drojax.models import get_model  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--train_limit", type=int, default=0)
ap.add_argument("--shared", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", "..", "shared"))
ap.add_argument("--json", default=None, help="write the accuracy rows to this JSON file")
args = ap.parse_args()

with np.load(os.path.join(args.shared, "data/cifar10_train.npz")) as f:
  xtr, ytr = f["images"], f["labels"].astype(np.int32)
if args.train_limit:
  xtr, ytr = xtr[:args.train_limit], ytr[:args.train_limit]
with np.load(os.path.join(args.shared, "data/cifar10_test_lossless_first1000.npz")) as f:
  xte, yte = f["images"], f["labels"].astype(np.int32)
with np.load(os.path.join(args.shared, "reference/frost_reference_first200.npz")) as f:
  ref = {s: f[f"frost_{s}"] for s in range(1, 6)}
  assert np.array_equal(f["clean"], xte[:200])

model = get_model("small_cnn", num_classes=10, width=16)
variables = model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
params, stats = variables["params"], variables.get("batch_stats", {})
bs = 128
steps_per_epoch = len(xtr) // bs
sched = optax.cosine_decay_schedule(0.05, args.epochs * steps_per_epoch)
tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(sched, momentum=0.9, nesterov=True))
opt = tx.init(params)


def augment(key, x):
  k1, k2, k3 = jax.random.split(key, 3)
  n = x.shape[0]
  pad = jnp.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
  dy = jax.random.randint(k1, (n,), 0, 9)
  dx = jax.random.randint(k2, (n,), 0, 9)
  crop = jax.vmap(lambda im, a, b: jax.lax.dynamic_slice(im, (a, b, 0), (32, 32, 3)))(pad, dy, dx)
  flip = jax.random.bernoulli(k3, 0.5, (n,))
  return jnp.where(flip[:, None, None, None], crop[:, :, ::-1], crop)


@jax.jit
def step(params, stats, opt, key, x, y):
  x = augment(key, x.astype(jnp.float32) / 255.0)

  def loss_fn(p):
    logits, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                              mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  (loss, new), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
  upd, opt = tx.update(g, opt, params)
  return optax.apply_updates(params, upd), new["batch_stats"], opt, loss


t0 = time.time()
rng = np.random.default_rng(0)
key = jax.random.key(1)
for ep in range(args.epochs):
  perm = rng.permutation(len(xtr))
  for i in range(steps_per_epoch):
    idx = perm[i * bs:(i + 1) * bs]
    key, sub = jax.random.split(key)
    params, stats, opt, loss = step(params, stats, opt, sub, xtr[idx], ytr[idx])
  print(f"epoch {ep + 1}: loss {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)

predict = jax.jit(lambda x: jnp.argmax(model.apply({"params": params, "batch_stats": stats}, x,
                                                   train=False), -1))


def acc(images_float, labels):
  return 100.0 * float(np.mean(np.asarray(predict(images_float)) == labels))


f32 = lambda u8: jnp.asarray(u8, jnp.float32) / 255.0
print(f"clean: first 200 {acc(f32(xte[:200]), yte[:200]):.1f}, first 1000 "
      f"{acc(f32(xte), yte):.1f}")
rows = {"maker frost (200)": [], "ours procedural (200)": [], "ours procedural (1000)": []}
for s in range(1, 6):
  # np.uint8 storage like the maker's outputs.
  ours = corruptions.corrupt(jax.random.fold_in(jax.random.key(20190), s), f32(xte),
                             name="frost", severity=s)
  ours = jnp.floor(ours * 255.0) / 255.0
  rows["maker frost (200)"].append(acc(f32(ref[s]), yte[:200]))
  rows["ours procedural (200)"].append(acc(ours[:200], yte[:200]))
  rows["ours procedural (1000)"].append(acc(ours, yte))
print("| frost | s1 | s2 | s3 | s4 | s5 | mean |\n|---|---|---|---|---|---|---|")
for name, vals in rows.items():
  print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} |")
print(f"{time.time() - t0:.0f} s, {jax.devices()[0].device_kind}")
if args.json:
  with open(args.json, "w") as f:
    json.dump({"rows": rows, "epochs": args.epochs, "train_images": int(len(xtr)),
               "device": jax.devices()[0].device_kind}, f, indent=1)
