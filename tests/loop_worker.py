"""Helper for tests/test_loop.py (not a test module): a tiny real training run through fit.

``python tests/loop_worker.py WORKDIR [--pause_at STEP]`` trains TinyNet on 16 fixed random
8x8 images (batch 4, 2 epochs, checkpoint every 3 steps). With ``--pause_at`` it writes
``WORKDIR/paused`` after that step and sleeps, so the test can SIGKILL it mid-epoch. At the
end it writes the final state's leaves to ``WORKDIR/final.npz``.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from drojax import loop, methods, models, train  # noqa: E402

N, BATCH, EPOCHS = 16, 4, 2


def batches_for_epoch(epoch, start_batch):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 3, N).astype(np.int32)
  order = np.random.default_rng([1, epoch]).permutation(N)
  for i in range(start_batch, N // BATCH):
    idx = order[i * BATCH:(i + 1) * BATCH]
    yield {"image": images[idx], "label": labels[idx], "id": idx.astype(np.int32)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--pause_at", type=int, default=0)
  parser.add_argument("--method", default="var_dro")
  args = parser.parse_args()
  method = methods.get_method(args.method)
  model = models.TinyNet(num_classes=3, width=4)
  steps = EPOCHS * N // BATCH
  opt = train.make_optimizer(steps, learning_rate=0.1)
  mesh = train.make_mesh(1)
  state = train.create_train_state(jax.random.key(0), model, opt, (8, 8, 3), method=method,
                                   num_examples=N)
  step = train.make_train_step(method, model, mesh, optimizer=opt)

  def on_step(s, metrics):
    if s == args.pause_at:
      open(os.path.join(args.workdir, "paused"), "w").close()
      time.sleep(600)

  result = loop.fit(state, step, batches_for_epoch, num_epochs=EPOCHS,
                    steps_per_epoch=N // BATCH, workdir=args.workdir, checkpoint_every_steps=3,
                    on_step=on_step, progress=False)
  leaves = jax.tree.leaves(jax.device_get(result.state))
  np.savez(os.path.join(args.workdir, "final.npz"), *leaves)
  print("resumed_from", result.resumed_from, flush=True)


if __name__ == "__main__":
  main()
