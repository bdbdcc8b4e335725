"""AugMix throughput: jitted JAX on device vs a PIL per-image pipeline, and its train-step share.

Measures, on batches of CIFAR-sized images (default 128 real CIFAR-10 test images):

1. AugMix (width 3, depth 1, 2, 3 and random 1..3, severity 3) images/s for
   ``jax.jit(drojax.augment.augmix)`` and for a PIL pipeline written here the way
   google-research/augmix's ``cifar.py`` + ``augmentations.py`` do it (per image: Dirichlet
   weights, Beta skip, chains of PIL ops with ``sample_level`` magnitudes, ``ToTensor``-style
   float conversion, mixing in NumPy), measured in interleaved rounds in one process.
2. The 3-view JSD augmentation (``augmix_views``: clean + 2 AugMix views) as a fraction of one
   ``erm`` train step of PreActResNet-18 at width 16 (``drojax.train.make_train_step``, same
   batch), also interleaved.

Targets (issue 4): JAX faster than the PIL pipeline on one core; the 3-view augmentation under
15% of the width-16 erm step.

Usage::

  python benchmarks/augment.py                      # CPU: pinned to one core (--cores 1)
  python benchmarks/augment.py --cores 2 --json out.jsonl
  python benchmarks/augment.py --cores 0            # no pinning (e.g. on a GPU host)

On an accelerator the JAX side runs on it unchanged; the PIL side always runs on the host.
``--cores N`` pins this process to N CPUs (and XLA:CPU to one thread when N = 1) before JAX is
imported, so on a CPU the comparison is one core against one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--images", default="/work/shared/data/cifar10_test_lossless_first1000.npz",
                 help=".npz with uint8 'images' [N, 32, 32, 3] (random images if missing)")
  p.add_argument("--depths", default="1,2,3,-1", help="comma list of chain depths (-1: 1..3)")
  p.add_argument("--cores", type=int, default=1,
                 help="pin to this many CPUs (0: no pinning); 1 also makes XLA:CPU single-threaded")
  p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
  p.add_argument("--iters", type=int, default=2, help="calls per function per round")
  p.add_argument("--width", type=int, default=16, help="PreActResNet-18 width of the erm step")
  p.add_argument("--no_step", action="store_true", help="skip the train-step comparison")
  p.add_argument("--json", default=None, help="append one JSON object per row to this file")
  return p.parse_args(argv)


ARGS = _parse(sys.argv[1:]) if __name__ == "__main__" else None
if ARGS is not None and ARGS.cores > 0:
  cpus = sorted(os.sched_getaffinity(0))[:ARGS.cores]
  os.sched_setaffinity(0, cpus)
  if ARGS.cores == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402
from drojax.augment.augmix import augmix, augmix_views  # noqa: E402


# ------------------------------------------------------------------------- the PIL pipeline

def _level(rng, severity):
  return rng.uniform(0.1, severity)


def _pil_ops(size):
  """The 9 default AugMix ops on PIL images, magnitudes from a severity, as the reference."""
  bil = Image.BILINEAR

  def signed(rng, v):
    return -v if rng.uniform() > 0.5 else v

  return [
      lambda im, s, r: ImageOps.autocontrast(im),
      lambda im, s, r: ImageOps.equalize(im),
      lambda im, s, r: ImageOps.posterize(im, 4 - int(_level(r, s) * 4 / 10)),
      lambda im, s, r: im.rotate(signed(r, int(_level(r, s) * 30 / 10)), resample=bil),
      lambda im, s, r: ImageOps.solarize(im, 256 - int(_level(r, s) * 256 / 10)),
      lambda im, s, r: im.transform(size, Image.AFFINE,
                                    (1, signed(r, _level(r, s) * 0.3 / 10), 0, 0, 1, 0),
                                    resample=bil),
      lambda im, s, r: im.transform(size, Image.AFFINE,
                                    (1, 0, 0, signed(r, _level(r, s) * 0.3 / 10), 1, 0),
                                    resample=bil),
      lambda im, s, r: im.transform(size, Image.AFFINE,
                                    (1, 0, signed(r, int(_level(r, s) * size[0] / 3 / 10)), 0, 1,
                                     0), resample=bil),
      lambda im, s, r: im.transform(size, Image.AFFINE,
                                    (1, 0, 0, 0, 1,
                                     signed(r, int(_level(r, s) * size[1] / 3 / 10))),
                                    resample=bil),
  ]


def pil_augmix_batch(images_u8, rng, *, width=3, depth=-1, severity=3.0):
  """AugMix of a uint8 batch with PIL, one image at a time -> float32 [B, H, W, C]."""
  out = np.empty(images_u8.shape, np.float32)
  ops = _pil_ops(images_u8.shape[2:0:-1])
  for i, array in enumerate(images_u8):
    image = Image.fromarray(array)
    ws = np.float32(rng.dirichlet([1.0] * width))
    m = np.float32(rng.beta(1.0, 1.0))
    mix = np.zeros(array.shape, np.float32)
    for j in range(width):
      aug = image.copy()
      for _ in range(depth if depth > 0 else rng.integers(1, 4)):
        aug = ops[rng.integers(len(ops))](aug, severity, rng)
      mix += ws[j] * (np.asarray(aug, np.float32) / 255.0)
    out[i] = (1 - m) * (array.astype(np.float32) / 255.0) + m * mix
  return out


# ------------------------------------------------------------------------- main

def _cpu_ms(fns, rounds):
  """Median process CPU milliseconds per call of each function, interleaved.

  Wall time on a shared machine includes waiting for other processes; the CPU time this
  process spends is the work itself (with ``--cores 1`` both sides run on one thread).
  """
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      start = time.process_time()
      fn()
      samples[name].append(1e3 * (time.process_time() - start))
  return {name: statistics.median(v) for name, v in samples.items()}


def _load(path, batch):
  if path and os.path.exists(path):
    with np.load(path, allow_pickle=False) as d:
      images = d["images"][:batch]
    if images.shape[0] == batch:
      return images, "real"
  return np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype(np.uint8), "random"


def _erm_step(width, images_u8):
  from drojax import methods, train
  from drojax.models import PreActResNet18
  method = methods.get_method("erm")
  model = PreActResNet18(num_classes=10, width=width)
  mesh = train.make_mesh(1)
  opt = train.make_optimizer(1000)
  state = train.create_train_state(jax.random.key(0), model, opt, images_u8.shape[1:],
                                   method=method)
  step = train.make_train_step(method, model, mesh, optimizer=opt, crop_flip=True, donate=False)
  b = images_u8.shape[0]
  batch = {"image": jnp.asarray(images_u8), "label": jnp.arange(b, dtype=jnp.int32) % 10,
           "id": jnp.arange(b, dtype=jnp.int32)}
  return lambda: jax.block_until_ready(step(state, batch)[1]["loss"])


def main() -> int:
  args = ARGS
  depths = [int(d) for d in args.depths.split(",")]
  images_u8, source = _load(args.images, args.batch)
  b = images_u8.shape[0]
  x = jnp.asarray(images_u8, jnp.float32) / 255.0
  info = _common.machine_info()
  device = jax.devices()[0]
  info["device"] = f"{device.platform}:{device.device_kind}"
  _common.log(f"{b} {source} images on {info['device']}, {info['cores']} cores, "
              f"load {info['loadavg_1m']}")
  rng = np.random.default_rng(0)
  counter = iter(range(10**9))
  rows = []
  for depth in depths:
    fn = jax.jit(lambda k, a, d=depth: augmix(k, a, depth=d))
    _common.log(f"depth {depth}: compiling ...")
    jax.block_until_ready(fn(jax.random.key(0), x))
    fns = {
        "jax": lambda fn=fn: jax.block_until_ready(fn(jax.random.key(next(counter)), x)),
        "pil": lambda d=depth: pil_augmix_batch(images_u8, rng, depth=d),
    }
    t = _common.time_interleaved(fns, iters=args.iters, rounds=args.rounds)
    cpu = _cpu_ms(fns, args.rounds)
    rows.append({
        "benchmark": "augmix", "depth": depth, "width": 3, "batch": b,
        "jax_img_per_s": t["jax"].per_second(b), "pil_img_per_s": t["pil"].per_second(b),
        "speedup_jax_over_pil": t["pil"].median_s / t["jax"].median_s,
        "jax_ms": 1e3 * t["jax"].median_s, "pil_ms": 1e3 * t["pil"].median_s,
        "jax_cpu_ms": cpu["jax"], "pil_cpu_ms": cpu["pil"],
        "cpu_speedup_jax_over_pil": cpu["pil"] / cpu["jax"],
        "utc": _common.utc_now(), **info})
  print(_common.markdown_table(rows, ["depth", "batch", "jax_img_per_s", "pil_img_per_s",
                                      "speedup_jax_over_pil", "jax_ms", "pil_ms", "jax_cpu_ms",
                                      "pil_cpu_ms", "cpu_speedup_jax_over_pil"]))
  step_rows = []
  if not args.no_step:
    views = jax.jit(augmix_views)
    jax.block_until_ready(views(jax.random.key(0), x))
    _common.log(f"compiling the width-{args.width} erm train step ...")
    step = _erm_step(args.width, images_u8)
    step()
    fns = {"views": lambda: jax.block_until_ready(views(jax.random.key(next(counter)), x)),
           "erm_step": step}
    t = _common.time_interleaved(fns, iters=args.iters, rounds=args.rounds)
    cpu = _cpu_ms(fns, args.rounds)
    step_rows.append({
        "benchmark": "augmix_views_vs_erm_step", "width": args.width, "batch": b,
        "views_ms": 1e3 * t["views"].median_s, "erm_step_ms": 1e3 * t["erm_step"].median_s,
        "views_fraction_of_step": t["views"].median_s / t["erm_step"].median_s,
        "views_cpu_ms": cpu["views"], "erm_step_cpu_ms": cpu["erm_step"],
        "cpu_fraction_of_step": cpu["views"] / cpu["erm_step"],
        "utc": _common.utc_now(), **info})
    print()
    print(_common.markdown_table(step_rows, ["width", "batch", "views_ms", "erm_step_ms",
                                             "views_fraction_of_step", "views_cpu_ms",
                                             "erm_step_cpu_ms", "cpu_fraction_of_step"]))
  _common.append_jsonl(args.json, rows + step_rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
