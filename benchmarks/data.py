"""Host data pipeline throughput: epoch batching, prefetch, and placing batches on the mesh.

The train step should never wait for data: this prints how many CIFAR-sized batches per second
the host produces (shuffled gather of uint8 NHWC images + labels + ids), with and without the
background prefetch thread and with ``shard_batch`` onto a 1-device mesh, to compare with the
train step's batches per second in ``docs/benchmarks.md``.

  python benchmarks/data.py [--npz /work/shared/data/cifar10_train.npz] [--json out.jsonl]

Without ``--npz`` it uses 50,000 random 32x32x3 uint8 images (the gather cost is the same).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402
from drojax import data  # noqa: E402


def _dataset(npz: str | None) -> data.ArrayDataset:
  if npz:
    return data.load_npz(npz)
  rng = np.random.default_rng(0)
  return data.ArrayDataset.create(rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                                  rng.integers(0, 10, 50_000), num_classes=10, name="random")


def _rate(make_iter, batches: int) -> float:
  it = make_iter()
  next(it)  # start-up (thread, first gather) is not the steady state
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches / (time.perf_counter() - t)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--npz", default=None)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  import jax

  ds = _dataset(args.npz)
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  b = args.batch_size

  def plain():
    return data.epoch_batches(ds, batch_size=b, seed=0, epoch=0)

  def prefetched():
    return data.prefetch(plain(), size=2)

  def on_device():
    return data.device_batches(plain(), mesh)

  rows = []
  for name, make in (("epoch_batches", plain), ("+ prefetch thread", prefetched),
                     ("+ prefetch + shard_batch", on_device)):
    rates = [_rate(make, min(args.batches, len(ds) // b - 2)) for _ in range(3)]
    r = float(np.median(rates))
    rows.append({"pipeline": name, "batch": b, "batches/s": round(r, 1),
                 "images/s": round(r * b), "dataset": ds.name, "date": _common.utc_now()})
  print(_common.markdown_table(rows, ["pipeline", "batch", "batches/s", "images/s", "dataset"]))
  _common.append_jsonl(args.json, rows)


if __name__ == "__main__":
  main()
