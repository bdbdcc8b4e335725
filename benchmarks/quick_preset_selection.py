"""Choosing the quick preset's training settings on the digits' TRAINING split only: each
candidate's held-out accuracy and CPU time on two stratified 80/20 splits of the 1,438 training
digits (no test image is ever loaded).

  python benchmarks/quick_preset_selection.py --candidates=E:,E10:num_epochs=10 \
      [--folds=1,2] [--out=quick_preset_selection.json]

A candidate is ``LABEL:field=value;field=value`` (``--config.`` overrides of the README's quick
start, ``--method=dro_augmix --preset=quick``; an empty list is the preset as it is). For each
split seed ``s`` in ``--folds`` (per class, a ``round(0.2 n)`` random share held out, as
``drojax.data.digits`` splits train from test), the candidate trains in a fresh child process
on the other 80 % (training seed = fold index) with ``--compilation_cache_dir=none`` and is
scored by clean accuracy on the held-out share (no corruption, no attack). The child's CPU
time (user + system, ``os.wait4``) and ``train_seconds`` are recorded; ``predicted_steps`` is the
steps the README's command would take on all 1,438 images (1,438 / 1,154 of the fold's). Digits'
quick-preset values the ``npz`` path does not get by itself (rho 0.5, the whole held-out split)
are passed explicitly. Under load only CPU seconds compare; record the load beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["-m", "experiments.cifar_c", "--method=dro_augmix", "--preset=quick",
        "--compilation_cache_dir=none", "--config.method_config.rho=0.5",
        "--config.eval.images=0", "--config.eval.corruption_names=none",
        "--config.eval.adv_eps=()", "--config.progress=False"]
HELD_OUT = 0.2


def _fold(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  fit, held = [], []
  for c in np.unique(labels):
    idx = rng.permutation(np.flatnonzero(labels == c))
    k = int(round(HELD_OUT * len(idx)))
    held.append(idx[:k])
    fit.append(idx[k:])
  return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def _parse_candidate(text: str) -> tuple[str, list[str]]:
  label, sep, fields = text.partition(":")
  if not sep or not label:
    raise SystemExit(f"--candidates: expected LABEL:field=value;... , got {text!r}")
  overrides = [f"--config.{f.strip()}" for f in fields.split(";") if f.strip()]
  for o in overrides:
    if "=" not in o:
      raise SystemExit(f"--candidates: expected field=value in {text!r}, got {o[9:]!r}")
  return label, overrides


def _run(data_dir: str, overrides: list[str], seed: int, held: int) -> dict:
  workdir = tempfile.mkdtemp(prefix="drojax-select-")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  argv = [sys.executable, *BASE, f"--dataset=npz:{data_dir}", f"--workdir={workdir}",
          f"--config.seed={seed}", f"--config.eval.batch_size={held}", *overrides]
  load = os.getloadavg()[0]
  t0 = time.perf_counter()
  try:
    with open(os.path.join(workdir, "stderr.txt"), "w+") as err:
      proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
      _, status, usage = os.wait4(proc.pid, 0)
      wall = time.perf_counter() - t0
      if os.waitstatus_to_exitcode(status) != 0:
        err.seek(0)
        raise SystemExit(f"candidate failed (exit {os.waitstatus_to_exitcode(status)}): "
                         f"{' '.join(argv)}\n{err.read()[-3000:]}")
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return {"held_out_accuracy": results["clean_accuracy"], "wall_s": wall,
          "train_seconds": results["train_seconds"], "steps": results["steps"],
          "load_before": load, "load_after": os.getloadavg()[0], "usage": usage}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--candidates", required=True,
                      help="comma-separated LABEL:field=value;field=value (--config. fields)")
  parser.add_argument("--folds", default="1,2", help="split seeds")
  parser.add_argument("--out", default="quick_preset_selection.json")
  args = parser.parse_args()
  candidates = [_parse_candidate(c) for c in args.candidates.split(",")]
  folds = [int(s) for s in args.folds.split(",")]
  sys.path.insert(0, ROOT)
  from drojax.data.digits import load_digits

  train = load_digits("train")
  images, labels = np.asarray(train.images), np.asarray(train.labels)
  rows = []
  tmp = tempfile.mkdtemp(prefix="drojax-folds-")
  try:
    for f, seed in enumerate(folds):
      fit, held = _fold(labels, seed)
      fold_dir = os.path.join(tmp, f"fold{seed}")
      os.makedirs(fold_dir)
      np.savez(os.path.join(fold_dir, "train.npz"), images=images[fit], labels=labels[fit],
               num_classes=10)
      np.savez(os.path.join(fold_dir, "test.npz"), images=images[held], labels=labels[held])
      for label, overrides in candidates:
        row = _run(fold_dir, overrides, f, len(held))
        usage = row.pop("usage")
        row.update(candidate=label, overrides=overrides, split_seed=seed, training_seed=f,
                   fit_images=len(fit), held_out_images=len(held),
                   cpu_s=usage.ru_utime + usage.ru_stime,
                   predicted_steps=round(row["steps"] * len(labels) / len(fit)))
        rows.append(row)
        print(f"{label} split {seed}: held-out {100 * row['held_out_accuracy']:.1f}% "
              f"({len(held)} images), CPU {row['cpu_s']:.0f} s, wall {row['wall_s']:.0f} s, "
              f"training {row['train_seconds']:.0f} s, {row['steps']} steps, load "
              f"{row['load_before']:.1f}/{row['load_after']:.1f}", flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print("| candidate | overrides | mean held-out accuracy | per split | median CPU s |")
  print("|---|---|---|---|---|")
  for label, overrides in candidates:
    mine = [r for r in rows if r["candidate"] == label]
    accs = [100 * r["held_out_accuracy"] for r in mine]
    print(f"| {label} | {' '.join(o[9:] for o in overrides) or '(the preset)'} | "
          f"{statistics.mean(accs):.1f}% | {', '.join(f'{a:.1f}' for a in accs)} | "
          f"{statistics.median(r['cpu_s'] for r in mine):.0f} |")
  with open(args.out, "w") as f:
    json.dump({"benchmark": "quick_preset_selection", "command": " ".join(sys.argv),
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}, f,
              indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
