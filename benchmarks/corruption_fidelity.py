"""Fidelity of drojax's CIFAR-C corruptions against the reference maker: PSNR and frequency.

For every corruption x severity of the standard table, corrupts the images with
``drojax.corruptions.corrupt`` and prints

1. the mean PSNR (dB, capped at 60) against the clean images beside the figure the public
   reference maker (hendrycks/robustness ``make_cifar_c.py``) gives on the same images, and
   the difference;
2. two frequency-domain statistics of the stored 8-bit outputs, so that a texture or blur
   mismatch shows even where the PSNR agrees (PSNR measures how far an image moves, not
   what the change looks like): ``lap``, the mean absolute 4-neighbour Laplacian
   ``|4 y[i,j] - y[i-1,j] - y[i+1,j] - y[i,j-1] - y[i,j+1]|`` over interior pixels and channels
   (levels), and ``hf``, the mean power of the radially averaged spectrum above 1/4 cycle per
   pixel (each image and channel mean-removed, Hann-windowed, ``|FFT|^2 / (H W)``, levels^2,
   summed over those frequencies). With ``--reference`` (maker outputs ``<name>_<severity>``
   uint8 beside ``clean``, e.g. ``shared/reference/frost_reference_first200.npz``) each is
   shown as ours / reference (relative difference, ``!`` beyond 10 %); without one, as ours
   and its ratio to the clean images' value (blur < 1, noise and textures > 1). For frost with
   a reference, the frost layer ``out - a * clean`` (``a`` the image weight) is also compared:
   its mean |Laplacian|, mean and contrast (per-image std, averaged).

Our float outputs are stored as 8 bits the way the reference stores its outputs before the
PSNR is taken: ``np.uint8(255 * x)`` (floor) for the corruptions that return floats, rounding
for those that return PIL/ImageMagick 8-bit images (pixelate, jpeg_compression, motion_blur).

Usage::

  python benchmarks/corruption_fidelity.py \
      --images ../shared/data/cifar10_test_lossless_first1000.npz [--limit N] [--json OUT.jsonl] \
      [--reference ../shared/reference/frost_reference_first200.npz] [--frost_dir DIR]
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


FREQ_TOLERANCE = 0.10  # relative, for the frequency statistics against a reference
HF_CUTOFF = 0.25  # cycles per pixel


def mean_abs_laplacian(y: np.ndarray) -> float:
  """Mean |4-neighbour Laplacian| of ``[N, H, W, C]`` levels over interior pixels."""
  y = y.astype(np.float64)
  lap = (4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2]
         - y[:, 1:-1, 2:])
  return float(np.mean(np.abs(lap)))


def high_frequency_power(y: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
  """Mean spectral power above ``cutoff`` cycles/pixel (mean-removed, Hann window), levels^2."""
  y = y.astype(np.float64)
  _, h, w, _ = y.shape
  win = np.outer(np.hanning(h), np.hanning(w))[None, :, :, None]
  z = (y - y.mean(axis=(1, 2), keepdims=True)) * win
  power = np.abs(np.fft.fft2(z, axes=(1, 2))) ** 2 / (h * w)
  radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
  return float(np.mean(np.sum(power * (radius >= cutoff)[None, :, :, None], axis=(1, 2))))


def _freq_cell(ours: float, ref: float | None, clean: float) -> tuple[str, float | None]:
  if ref is None:
    return f"{ours:.1f} (x{ours / clean:.2f})", None
  rel = ours / ref - 1
  flag = " !" if abs(rel) > FREQ_TOLERANCE else ""
  return f"{ours:.1f} / {ref:.1f} ({100 * rel:+.0f}%){flag}", rel


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
  ap.add_argument("--reference", default=None,
                  help=".npz of maker outputs '<name>_<severity>' (uint8) and 'clean' (the first "
                       "images of --images): compare the frequency statistics with them")
  ap.add_argument("--frost_dir", default=None,
                  help="folder of frost photographs (default: the procedural texture)")
  args = ap.parse_args(argv)

  with np.load(args.images, allow_pickle=False) as f:
    clean = f["images"]
  if args.limit:
    clean = clean[:args.limit]
  if clean.dtype != np.uint8 or clean.ndim != 4 or clean.shape[-1] != 3:
    print(f"--images: expected uint8 [N, H, W, 3]; got {clean.dtype} {clean.shape}",
          file=sys.stderr)
    return 2
  reference = {}
  if args.reference:
    with np.load(args.reference, allow_pickle=False) as f:
      reference = {k: f[k] for k in f.files}
    ref_clean = reference.pop("clean", None)
    if ref_clean is None or ref_clean.shape[1:] != clean.shape[1:]:
      print(f"--reference: expected a 'clean' array [N, {', '.join(map(str, clean.shape[1:]))}]",
            file=sys.stderr)
      return 2
    n = min(len(clean), len(ref_clean))
    if not np.array_equal(ref_clean[:n], clean[:n]):
      print("--reference: its 'clean' images are not the first images of --images",
            file=sys.stderr)
      return 2
    clean = clean[:n]
    reference = {k: v[:n] for k, v in reference.items()}
  frost_textures = None
  if args.frost_dir:
    from drojax.corruptions import textures
    try:
      frost_textures = textures.load_frost_textures(args.frost_dir)
    except ValueError as e:
      print(f"--frost_dir: {e}", file=sys.stderr)
      return 2
  names = [n for n in args.names.split(",") if n]
  fns = {}
  key = jax.random.key(args.seed)
  rows = []
  print(f"# {len(clean)} images from {args.images}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; frost texture: "
        f"{args.frost_dir or 'procedural'}"
        + (f"; reference {args.reference}" if reference else ""))
  clean_lap = mean_abs_laplacian(clean)
  clean_hf = high_frequency_power(clean)
  freq_rows: list[str] = []
  frost_rows: list[str] = []
  print("| corruption | " + " | ".join(f"sev {s} ours / ref (diff)" for s in range(1, 6)) + " |")
  print("|---|" + "---|" * 5)
  worst = []
  cells_by_stat: dict[str, list[list[str]]] = {}
  t0 = time.time()
  for ni, name in enumerate(names):
    cells = []
    for sev in range(1, 6):
      fn = fns.setdefault((name, sev), jax.jit(
          lambda k, x, t, name=name, sev=sev: corruptions.corrupt(
              k, x, name=name, severity=sev, frost_textures=t)))
      vals, outs = [], []
      for bi, start in enumerate(range(0, len(clean), args.batch)):
        chunk = clean[start:start + args.batch]
        k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, ni), sev), bi)
        out = np.asarray(fn(k, chunk.astype(np.float32) / 255.0,
                            frost_textures if name == "frost" else None))
        out = np.round(out * 255.0) if name in ROUNDED else np.floor(out * 255.0)
        vals.append(psnr(chunk, out))
        outs.append(out)
      ours = float(np.mean(np.concatenate(vals)))
      ref = REFERENCE_PSNR[name][sev - 1]
      diff = ours - ref
      tol = TOLERANCE_DB.get(name, 1.0)
      flag = "" if abs(diff) <= tol else " !"
      cells.append(f"{ours:.2f} / {ref:.2f} ({diff:+.2f}){flag}")
      worst.append((abs(diff) - tol, name, sev, diff))
      out = np.concatenate(outs)
      ref_out = reference.get(f"{name}_{sev}")
      stats = {"lap": (mean_abs_laplacian, clean_lap), "hf": (high_frequency_power, clean_hf)}
      row = {"benchmark": "corruption_fidelity", "corruption": name, "severity": sev,
             "psnr": round(ours, 3), "reference_psnr": ref, "diff_db": round(diff, 3),
             "tolerance_db": tol, "num_images": int(len(clean)),
             "frost_texture": args.frost_dir or "procedural"}
      freq_cells = []
      for stat, (fn_stat, clean_val) in stats.items():
        val = fn_stat(out)
        ref_val = None if ref_out is None else fn_stat(ref_out)
        text, rel = _freq_cell(val, ref_val, clean_val)
        freq_cells.append(text)
        row[stat] = round(val, 3)
        row[f"{stat}_clean"] = round(clean_val, 3)
        if ref_val is not None:
          row[f"{stat}_reference"] = round(ref_val, 3)
          worst.append((abs(rel) - FREQ_TOLERANCE, f"{name} {stat}", sev, rel))
      cells_by_stat.setdefault(name, []).append(freq_cells)
      if name == "frost" and ref_out is not None:
        a = corruptions.params_at("frost", sev, "standard")[0]
        layer = lambda o: o.astype(np.float64) - a * clean.astype(np.float64)
        for stat, fn_stat in [("layer_lap", lambda o: mean_abs_laplacian(layer(o))),
                              ("layer_mean", lambda o: float(np.mean(layer(o)))),
                              ("layer_contrast", lambda o: float(np.mean(np.std(
                                  layer(o), axis=(1, 2, 3)))))]:
          val, ref_val = fn_stat(out), fn_stat(ref_out)
          rel = val / ref_val - 1
          row[stat], row[f"{stat}_reference"] = round(val, 3), round(ref_val, 3)
          worst.append((abs(rel) - FREQ_TOLERANCE, f"frost {stat}", sev, rel))
          frost_rows.append((stat, sev, val, ref_val, rel))
      rows.append(row)
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
  for si, stat in enumerate(("lap (mean |Laplacian|, levels)",
                             f"hf (power above {HF_CUTOFF} cycle/px, levels^2)")):
    what = "ours / reference (diff)" if reference else "ours (x clean)"
    print(f"\n{stat}: {what}; clean images: lap {clean_lap:.1f}, hf {clean_hf:.1f}")
    print("| corruption | " + " | ".join(f"sev {s}" for s in range(1, 6)) + " |")
    print("|---|" + "---|" * 5)
    for name, per_sev in cells_by_stat.items():
      print(f"| {name} | " + " | ".join(c[si] for c in per_sev) + " |")
  if frost_rows:
    print("\nfrost layer (out - a * clean): ours / reference (diff)")
    print("| statistic | " + " | ".join(f"sev {s}" for s in range(1, 6)) + " |")
    print("|---|" + "---|" * 5)
    for stat in ("layer_lap", "layer_mean", "layer_contrast"):
      cells = [f"{v:.1f} / {r:.1f} ({100 * rel:+.0f}%)" for st, _, v, r, rel in frost_rows
               if st == stat]
      print(f"| {stat} | " + " | ".join(cells) + " |")
  over = [w for w in worst if w[0] > 0]
  print(f"\n{len(worst) - len(over)}/{len(worst)} checks within tolerance (PSNR 1 dB, frost "
        f"2 dB; frequency statistics vs the reference 10 %); {time.time() - t0:.0f} s.")
  for _, name, sev, diff in sorted(over, reverse=True):
    value = f"{100 * diff:+.0f}%" if " " in name else f"{diff:+.2f} dB"
    print(f"  outside: {name} sev {sev}: {value}")
  if args.json:
    with open(args.json, "a") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
