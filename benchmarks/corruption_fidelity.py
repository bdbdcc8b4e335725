"""Fidelity of drojax's CIFAR-C corruptions against the reference maker, in PSNR.

For every corruption x severity of the standard table, corrupts the images with
``drojax.corruptions.corrupt`` and prints the mean PSNR (dB, capped at 60) against the clean
images beside the figure the public reference maker (hendrycks/robustness ``make_cifar_c.py``)
gives on the same images, and the difference.

Our float outputs are stored as 8 bits the way the reference stores its outputs before the
PSNR is taken: ``np.uint8(255 * x)`` (floor) for the corruptions that return floats, rounding
for those that return PIL/ImageMagick 8-bit images (pixelate, jpeg_compression, motion_blur).

Usage::

  python benchmarks/corruption_fidelity.py \
      --images ../shared/data/cifar10_test_lossless_first1000.npz [--limit N] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Run from a checkout without installing: the repository root holds the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from drojax import corruptions  # noqa: E402

# Mean PSNR (dB, capped at 60) of the reference maker's output vs the clean image over the
# 1,000 lossless CIFAR-10 test images (official indices 0..999), standard table.
# Source: shared/reference/cifar_c_severities.md, "Fidelity target" (NumPy 2 / scikit-image
# 0.26 / ImageMagick 6).
REFERENCE_PSNR = {
    "gaussian_noise": (28.07, 24.61, 22.19, 21.20, 20.32),
    "shot_noise": (30.45, 27.50, 23.62, 22.41, 20.72),
    "impulse_noise": (25.22, 22.09, 20.35, 18.09, 16.62),
    "defocus_blur": (42.45, 34.75, 31.17, 28.85, 25.82),
    "glass_blur": (21.80, 21.94, 22.65, 18.71, 19.29),
    "motion_blur": (27.76, 24.42, 22.62, 22.60, 21.40),
    "zoom_blur": (25.68, 24.37, 22.93, 21.73, 20.74),
    "snow": (25.72, 19.68, 18.66, 15.86, 13.41),
    "frost": (18.31, 14.99, 14.11, 14.80, 15.09),
    "fog": (26.02, 20.21, 18.05, 16.54, 14.86),
    "brightness": (27.83, 21.68, 18.22, 15.86, 12.74),
    "contrast": (26.33, 20.32, 18.74, 17.40, 15.71),
    "elastic_transform": (18.20, 18.75, 19.67, 20.37, 21.77),
    "pixelate": (33.59, 30.35, 29.41, 27.37, 25.61),
    "jpeg_compression": (31.22, 29.38, 28.84, 28.30, 27.63),
    "speckle_noise": (30.44, 26.12, 24.59, 22.19, 20.35),
    "gaussian_blur": (42.75, 31.33, 29.21, 27.76, 25.75),
    "spatter": (30.66, 26.20, 22.81, 24.33, 21.72),
    "saturate": (24.57, 22.38, 27.58, 19.17, 15.86),
}
# The reference returns these as 8-bit images (PIL / ImageMagick), i.e. rounded.
ROUNDED = {"pixelate", "jpeg_compression", "motion_blur"}
TOLERANCE_DB = {"frost": 2.0}


def psnr(clean_u8: np.ndarray, out: np.ndarray) -> np.ndarray:
  mse = np.mean((out.astype(np.float64) - clean_u8.astype(np.float64)) ** 2, axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    val = 10 * np.log10(255.0 ** 2 / mse)
  return np.minimum(val, 60.0)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--images", required=True, help=".npz with 'images' uint8 NHWC")
  ap.add_argument("--limit", type=int, default=None, help="use the first N images")
  ap.add_argument("--batch", type=int, default=250)
  ap.add_argument("--names", default=",".join(corruptions.NAMES))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", default=None, help="append one JSON line per cell to this file")
  args = ap.parse_args(argv)

  with np.load(args.images, allow_pickle=False) as f:
    clean = f["images"]
  if args.limit:
    clean = clean[:args.limit]
  if clean.dtype != np.uint8 or clean.ndim != 4 or clean.shape[-1] != 3:
    print(f"--images: expected uint8 [N, H, W, 3]; got {clean.dtype} {clean.shape}",
          file=sys.stderr)
    return 2
  names = [n for n in args.names.split(",") if n]
  fns = {}
  key = jax.random.key(args.seed)
  rows = []
  print(f"# {len(clean)} images from {args.images}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
  print("| corruption | " + " | ".join(f"sev {s} ours / ref (diff)" for s in range(1, 6)) + " |")
  print("|---|" + "---|" * 5)
  worst = []
  t0 = time.time()
  for ni, name in enumerate(names):
    cells = []
    for sev in range(1, 6):
      fn = fns.setdefault((name, sev), jax.jit(
          lambda k, x, name=name, sev=sev: corruptions.corrupt(k, x, name=name, severity=sev)))
      vals = []
      for bi, start in enumerate(range(0, len(clean), args.batch)):
        chunk = clean[start:start + args.batch]
        k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, ni), sev), bi)
        out = np.asarray(fn(k, chunk.astype(np.float32) / 255.0))
        out = np.round(out * 255.0) if name in ROUNDED else np.floor(out * 255.0)
        vals.append(psnr(chunk, out))
      ours = float(np.mean(np.concatenate(vals)))
      ref = REFERENCE_PSNR[name][sev - 1]
      diff = ours - ref
      tol = TOLERANCE_DB.get(name, 1.0)
      flag = "" if abs(diff) <= tol else " !"
      cells.append(f"{ours:.2f} / {ref:.2f} ({diff:+.2f}){flag}")
      worst.append((abs(diff) - tol, name, sev, diff))
      rows.append({"benchmark": "corruption_fidelity", "corruption": name, "severity": sev,
                   "psnr": round(ours, 3), "reference_psnr": ref, "diff_db": round(diff, 3),
                   "tolerance_db": tol, "num_images": int(len(clean))})
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
  over = [w for w in worst if w[0] > 0]
  print(f"\n{len(worst) - len(over)}/{len(worst)} cells within tolerance (1 dB; frost 2 dB); "
        f"{time.time() - t0:.0f} s.")
  for _, name, sev, diff in sorted(over, reverse=True):
    print(f"  outside: {name} sev {sev}: {diff:+.2f} dB")
  if args.json:
    with open(args.json, "a") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
