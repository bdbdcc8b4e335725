r"""Calibrate CIFAR-C severities so accuracy falls linearly from clean to a floor, for every type.

The refined benchmark of DRO-Augment re-tuned each corruption's parameters so that a reference
model's accuracy drops about linearly with severity, and at the same rate for every type. This
tool does that for our own reference model and our corruptions:

1. Measure the clean accuracy ``a_0`` and, for each corruption, the accuracy at the base
   table's severities 1..5 ("before").
2. Targets: ``t_k = a_0 - (k / 5) (a_0 - floor)`` for ``k = 1..5``; ``floor`` defaults to the
   mean "before" accuracy at severity 5 over the corruptions calibrated, so the sev-5
   difficulty is kept on average and equalized across types.
3. For each corruption and ``k``, bisect on the continuous severity ``s`` in ``[s_{k-1}, 5]``
   of ``drojax.corruptions.corrupt(..., severity=s, table=base_table)`` (parameters interpolated
   between the table's rows, row 0 being the identity) until ``acc(s)`` meets ``t_k``. This
   assumes accuracy is non-increasing in ``s``: roughly true along the tables' parameter
   paths, but not exactly (pixel distance is not monotone for glass blur, elastic, frost,
   saturate, spatter, and small evaluation sets add noise; the same corruption key is used for
   every ``s`` so the noise is common). So the chosen ``s`` is the evaluated point (bisection
   points and the integer severities) closest to the target. Where no point in
   ``[s_{k-1}, 5]`` gets down to a target, the row is marked capped: the interpolation does
   not extrapolate past the table's severity 5, so use a harder ``--base_table`` (the refined
   tables' severity 5 is stronger for most types) or a higher ``--floor``.
4. Print and save the calibrated table in the format of the refined section of
   ``shared/reference/cifar_c_severities.md`` (parameters per severity), the continuous
   severities, the accuracies before/after, ``calibration.json`` and a PNG of accuracy vs
   severity before and after.

The severity is traced under ``jit`` (one compilation per corruption, not per bisection step).

Usage (a trained run's workdir, evaluated on an .npz of uint8 ``images`` and ``labels``)::

  python -m experiments.calibrate_severities --workdir=runs/c10_erm \
      --images=../shared/data/cifar10_test_lossless_first1000.npz --out=runs/calibration

Self-contained demo (trains a small reference CNN on the first half of the .npz for
``--train_steps`` steps and calibrates on the second half)::

  python -m experiments.calibrate_severities \
      --images=../shared/data/cifar10_test_lossless_first1000.npz --train_steps=300 \
      --names=gaussian_noise,contrast,brightness --out=/tmp/calibration

or, with the demo model trained on other data (here 20,000 CIFAR-10 training images)::

  python -m experiments.calibrate_severities \
      --images=../shared/data/cifar10_test_lossless_first1000.npz \
      --train_images=../shared/data/cifar10_train.npz --train_size=20000 --train_steps=1500 \
      --width=32 --label=CIFAR-10 --out=/tmp/calibration
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

NUM_SEVERITIES = 5


# ------------------------------------------------------------------------------- pure helpers


def target_accuracies(clean: float, floor: float, num_severities: int = NUM_SEVERITIES
                      ) -> list[float]:
  """Linear targets ``t_k = clean - (k / n) (clean - floor)`` for ``k = 1..n``.

  >>> [round(t, 3) for t in target_accuracies(0.9, 0.4)]
  [0.8, 0.7, 0.6, 0.5, 0.4]
  """
  return [clean - (k / num_severities) * (clean - floor) for k in range(1, num_severities + 1)]


def solve_monotone(acc_fn: Callable[[float], float], target: float, lo: float, hi: float, *,
                   iterations: int = 7, known: Mapping[float, float] | None = None
                   ) -> tuple[float, float, bool]:
  """Bisection for ``acc_fn(s) = target`` with ``acc_fn`` non-increasing on ``[lo, hi]``.

  Bisects assuming monotonicity, then returns, among every point evaluated (and the ``known``
  evaluations inside ``[lo, hi]``), the one whose accuracy is closest to the target (ties: the
  smaller ``s``), so a curve that is only roughly monotone still gets its best evaluated
  point. ``capped`` says that no evaluated point reached the target (all stayed above it).

  Args:
    acc_fn: ``s -> accuracy``, assumed non-increasing.
    target: the accuracy to reach.
    lo, hi: the search interval.
    iterations: bisection steps after the end points (resolution ``(hi - lo) / 2^iterations``).
    known: earlier evaluations ``{s: accuracy}`` to consider too (e.g. the integer
      severities).

  Returns:
    ``(s, acc_fn(s), capped)``.

  Example:
    >>> s, a, capped = solve_monotone(lambda s: 1 - s / 5, 0.5, 0.0, 5.0, iterations=10)
    >>> round(s, 2), capped
    (2.5, False)
  """
  evaluated = {float(k): float(v) for k, v in (known or {}).items() if lo <= k <= hi}

  def f(s):
    if s not in evaluated:
      evaluated[s] = float(acc_fn(s))
    return evaluated[s]

  if f(hi) <= target < f(lo):
    a, b = lo, hi
    for _ in range(iterations):
      mid = 0.5 * (a + b)
      if f(mid) > target:
        a = mid
      else:
        b = mid
  capped = min(evaluated.values()) > target
  best = min(evaluated, key=lambda s: (abs(evaluated[s] - target), s))
  return best, evaluated[best], capped


def format_value(v: float) -> str:
  """A parameter as the reference tables write it: 3 significant digits, no leading zero.

  >>> [format_value(v) for v in (0.035, 450.0, 1.04, 0.0, 12.0, float("inf"))]
  ['.035', '450', '1.04', '0', '12', 'inf']
  """
  if math.isinf(v):
    return "inf"
  text = f"{v:.3g}"
  if "e" in text:
    text = f"{v:.4f}".rstrip("0").rstrip(".")
  if text.startswith("0."):
    text = text[1:]
  elif text.startswith("-0."):
    text = "-" + text[2:]
  return text


def format_row(params: Sequence[Sequence[float]]) -> str:
  """Five parameter tuples as a table cell: ``.035 .065 ...`` or ``(.35,.45)(.4,.65)...``."""
  if all(len(p) == 1 for p in params):
    return " ".join(format_value(p[0]) for p in params)
  return "".join("(" + ",".join(format_value(v) for v in p) + ")" for p in params)


def markdown_table(calibration: Mapping[str, Any], *, label: str) -> str:
  """The calibrated parameters as the refined section of ``cifar_c_severities.md``, followed
  by the continuous severities and the accuracies before and after."""
  rows = calibration["corruptions"]
  lines = [f"## Calibrated ({label}; base table {calibration['base_table']})", "",
           f"Clean accuracy {100 * calibration['clean_accuracy']:.2f}%, floor "
           f"{100 * calibration['floor']:.2f}%, targets " +
           ", ".join(f"{100 * t:.1f}" for t in calibration["targets"]) +
           f" (%), {calibration['num_images']} images.", "",
           f"| corruption | {label} sev 1..5 |", "|---|---|"]
  for name, r in rows.items():
    lines.append(f"| {name} | {format_row(r['params'])} |")
  lines += ["", "| corruption | continuous severity (base table) | accuracy before (%) | "
            "accuracy after (%) | capped |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    lines.append(
        f"| {name} | " + " ".join(f"{s:.3f}" for s in r["severity"]) + " | " +
        " ".join(f"{100 * a:.1f}" for a in r["before"]) + " | " +
        " ".join(f"{100 * a:.1f}" for a in r["after"]) + " | " +
        ("yes" if any(r["capped"]) else "") + " |")
  lines += ["", f"Mean absolute distance to the linear targets: before "
            f"{100 * calibration['mean_abs_error_before']:.2f} points, after "
            f"{100 * calibration['mean_abs_error_after']:.2f} points."]
  return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- evaluation


def _as_rgb_float(images: np.ndarray) -> np.ndarray:
  x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  if x.shape[-1] != 3:
    raise ValueError(f"images must have 1 or 3 channels; got shape {images.shape}.")
  return x


def make_accuracy_fn(model, images: np.ndarray, labels: np.ndarray, name: str, *, table: str,
                     key: jax.Array, batch_size: int = 256) -> Callable[[float], float]:
  """``s -> accuracy`` of ``model`` on ``images`` corrupted by ``name`` at continuous
  severity ``s`` (traced: one compilation per corruption), with a fixed key per batch."""
  from drojax.evaluate import batching, corruption

  pred = batching.predictor(model)
  fn = corruption.jit_corrupt_traced(name, table)
  x = _as_rgb_float(images)
  n = x.shape[0]
  bs = min(batch_size, n)
  spans = batching.batches(n, bs)
  batches = [batching.padded(x[s:e], bs) for s, e in spans]

  def acc(s: float) -> float:
    correct = 0
    for b, ((s0, e0), xb) in enumerate(zip(spans, batches)):
      xc = fn(jax.random.fold_in(key, b), xb, jnp.float32(s))
      correct += int(np.sum(pred(xc)[: e0 - s0] == labels[s0:e0]))
    return correct / n
  return acc


def calibrate(model, images: np.ndarray, labels: np.ndarray, *,
              names: Sequence[str] | None = None, base_table: str = "standard",
              floor: float | None = None, iterations: int = 7, seed: int = 0,
              batch_size: int = 256, progress: bool = True) -> dict[str, Any]:
  """Chooses, per corruption, continuous severities whose accuracies follow linear targets.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a ``drojax.evaluate.BoundModel``.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1] (C = 1 is repeated to RGB).
    labels: ``[N]`` integer labels.
    names: corruptions (default: the 15 standard ones).
    base_table: the table whose rows define the continuous severity path.
    floor: target accuracy at severity 5 (default: mean base-table sev-5 accuracy).
    iterations: bisection steps per severity.
    seed: corruption key seed (the same key for every strength of a corruption).
    batch_size: rows per call.
    progress: print one line per corruption.

  Returns:
    A JSON-ready dict: ``clean_accuracy``, ``floor``, ``targets``, ``base_table``,
    ``num_images``, ``corruptions`` ``{name: {severity [5], params [5][P], before [5],
    after [5], capped [5]}}``, ``mean_abs_error_before`` / ``_after``.
  """
  from drojax import corruptions
  from drojax import evaluate as ev

  names = tuple(corruptions.STANDARD_NAMES if not names else names)
  for n_ in names:
    corruptions.tables.check_name(n_)
  corruptions.tables.check_table(base_table)
  labels = np.asarray(labels)
  x = _as_rgb_float(np.asarray(images))
  clean = ev.clean_accuracy(model, x, labels, batch_size=batch_size, progress=False)
  key = jax.random.key(seed)
  acc_fns, before, caches = {}, {}, {}
  for i, name in enumerate(names):
    acc_fns[name] = make_accuracy_fn(model, x, labels, name, table=base_table,
                                     key=jax.random.fold_in(key, i), batch_size=batch_size)
    before[name] = [acc_fns[name](float(k)) for k in range(1, NUM_SEVERITIES + 1)]
    caches[name] = {float(k): a for k, a in zip(range(1, NUM_SEVERITIES + 1), before[name])}
    if progress:
      print(f"  {name}: before " + " ".join(f"{100 * a:.1f}" for a in before[name]), flush=True)
  if floor is None:
    floor = float(np.mean([before[n_][-1] for n_ in names]))
  targets = target_accuracies(clean, floor)
  rows = {}
  for name in names:
    cache = caches[name]

    def cached(s, _f=acc_fns[name], _c=cache):
      if s not in _c:
        _c[s] = _f(s)
      return _c[s]

    lo, sev, after, capped = 0.0, [], [], []
    for t in targets:
      s, a, c = solve_monotone(cached, t, lo, float(NUM_SEVERITIES), iterations=iterations,
                               known=cache)
      sev.append(s)
      after.append(a)
      capped.append(c)
      lo = s
    params = [[float(v) for v in corruptions.params_at(name, float(s), base_table)]
              for s in sev]
    rows[name] = {"severity": sev, "params": params, "before": before[name], "after": after,
                  "capped": capped}
    if progress:
      print(f"  {name}: after  " + " ".join(f"{100 * a:.1f}" for a in after) +
            f"  (severity {' '.join(f'{s:.2f}' for s in sev)})", flush=True)
  err = lambda key_: float(np.mean([abs(a - t) for r in rows.values()
                                    for a, t in zip(r[key_], targets)]))
  return {"clean_accuracy": clean, "floor": floor, "targets": targets,
          "base_table": base_table, "num_images": int(x.shape[0]), "iterations": iterations,
          "seed": seed, "corruptions": rows, "mean_abs_error_before": err("before"),
          "mean_abs_error_after": err("after")}


def plot_calibration(calibration: Mapping[str, Any], path: str) -> str:
  """Accuracy vs severity before (base table) and after calibration, with the targets."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  xs = list(range(NUM_SEVERITIES + 1))
  clean = 100 * calibration["clean_accuracy"]
  tgt = [clean] + [100 * t for t in calibration["targets"]]
  for ax, key, title in ((axes[0], "before", f"before ({calibration['base_table']} table)"),
                         (axes[1], "after", "after calibration")):
    for name, r in calibration["corruptions"].items():
      ax.plot(xs, [clean] + [100 * a for a in r[key]], marker="o", lw=1, label=name)
    ax.plot(xs, tgt, "k--", lw=2, label="linear target")
    ax.set_title(title)
    ax.set_xlabel("severity (0 = clean)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy (%)")
  axes[1].legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_calibration(calibration: Mapping[str, Any], out: str, *, label: str) -> dict[str, str]:
  """Writes ``calibrated_severities.md``, ``calibration.json`` and ``calibration.png``."""
  os.makedirs(out, exist_ok=True)
  paths = {"md": os.path.join(out, "calibrated_severities.md"),
           "json": os.path.join(out, "calibration.json"),
           "png": os.path.join(out, "calibration.png")}
  with open(paths["md"], "w") as f:
    f.write(markdown_table(calibration, label=label))
  with open(paths["json"], "w") as f:
    json.dump(calibration, f, indent=2, allow_nan=False,
              default=lambda v: None)
  plot_calibration(calibration, paths["png"])
  return paths


# ------------------------------------------------------------------------------- models


def train_reference_model(images: np.ndarray, labels: np.ndarray, *, num_classes: int,
                          workdir: str, steps: int = 300, width: int = 16,
                          batch_size: int = 128, learning_rate: float = 3e-3, seed: int = 0):
  """Trains the library's ``small_cnn`` (ERM, Adam, random crops and flips) for about ``steps``
  steps (whole epochs) with ``experiments.train.train`` into ``workdir`` (checkpoints: a
  re-run resumes or finds it trained); returns it as a ``BoundModel``.

  For the self-contained demo and tests only; a real calibration uses a trained run.
  """
  from drojax import data
  from experiments import train
  from experiments.configs import common

  ds = data.ArrayDataset.create(np.asarray(images), np.asarray(labels), num_classes=num_classes,
                                name="reference")
  c = common.base_config(method="erm", dataset="reference", preset="quick")
  bs = min(batch_size, len(ds))
  c.update(dict(model="small_cnn", width=width, batch_size=bs, optimizer="adam",
                learning_rate=learning_rate, weight_decay=0.0, lr_schedule="constant",
                num_epochs=max(1, math.ceil(steps / data.num_batches(len(ds), bs))), seed=seed,
                checkpoint_every_steps=10**9, progress=False, log_every_steps=10**9))
  from drojax import train as train_lib

  return train.bound_model(train.train(c, workdir, ds, mesh=train_lib.make_mesh(1)))


def load_workdir_model(workdir: str, num_classes: int):
  """The trained model of an experiment workdir as a ``BoundModel`` (eval mode).

  Reads ``config.json`` (``model``, ``width``) and the parameters and BatchNorm statistics of
  the latest checkpoint under ``workdir/checkpoints`` (``drojax.checkpoint.Checkpointer``, as
  saved: the optimizer's configuration does not need to be rebuilt).
  """
  from drojax import models
  from drojax.checkpoint import Checkpointer
  from experiments import train

  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{cfg_path} not found: --workdir must be a finished training run.")
  with open(cfg_path) as f:
    cfg = json.load(f)
  model = models.get_model(cfg["model"], num_classes=num_classes, width=cfg.get("width"))
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    restored = ckpt.restore_latest()
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')}.")
  variables = {k: restored.state[k] for k in ("params", "batch_stats") if restored.state.get(k)}
  return train.bound_model(train.Trained(model, variables, 0.0, restored.step))


def load_npz(path: str) -> tuple[np.ndarray, np.ndarray]:
  """``images`` (uint8 NHWC) and ``labels`` from an .npz, never unpickling."""
  with np.load(path, allow_pickle=False) as z:
    missing = {"images", "labels"} - set(z.files)
    if missing:
      raise ValueError(f"{path}: missing keys {sorted(missing)} (has {z.files}).")
    images, labels = z["images"], z["labels"]
  if images.ndim != 4 or images.dtype != np.uint8:
    raise ValueError(f"{path}: images must be uint8 [N, H, W, C]; got {images.dtype} "
                     f"{images.shape}.")
  if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: labels must be integers [N]; got {labels.dtype} {labels.shape}.")
  return images, labels


def run(*, images_path: str, out: str, workdir: str | None = None,
        names: Sequence[str] | None = None, base_table: str = "standard",
        floor: float | None = None, iterations: int = 7, num_images: int = 0,
        train_steps: int = 300, width: int = 16, label: str | None = None, seed: int = 0,
        batch_size: int = 256, train_images_path: str | None = None,
        train_size: int = 0) -> dict[str, Any]:
  """The CLI's work, callable from Python: load, (train,) calibrate, print and write."""
  images, labels = load_npz(images_path)
  num_classes = int(labels.max()) + 1
  if workdir:
    model = load_workdir_model(workdir, num_classes)
    cal_x, cal_y = images, labels
  else:
    if train_images_path:
      # Demo: a reference model trained on another .npz (e.g. the training set).
      tr_x, tr_y = load_npz(train_images_path)
      num_classes = max(num_classes, int(tr_y.max()) + 1)
      cal_x, cal_y = images, labels
    else:
      # Demo: a reference model trained on the first half, calibrated on the second.
      half = images.shape[0] // 2
      tr_x, tr_y = images[:half], labels[:half]
      cal_x, cal_y = images[half:], labels[half:]
    if train_size:
      tr_x, tr_y = tr_x[:train_size], tr_y[:train_size]
    print(f"training a reference small_cnn (width {width}, ~{train_steps} steps) on "
          f"{tr_x.shape[0]} images", flush=True)
    model = train_reference_model(tr_x, tr_y, num_classes=num_classes, steps=train_steps,
                                  width=width, seed=seed,
                                  workdir=os.path.join(out, "reference_model"))
  if num_images:
    cal_x, cal_y = cal_x[:num_images], cal_y[:num_images]
  cal = calibrate(model, cal_x, cal_y, names=names, base_table=base_table, floor=floor,
                  iterations=iterations, seed=seed, batch_size=batch_size)
  label = label or os.path.splitext(os.path.basename(images_path))[0]
  paths = write_calibration(cal, out, label=label)
  print(markdown_table(cal, label=label))
  print(f"wrote {paths}")
  cal["paths"] = paths
  return cal


# ------------------------------------------------------------------------------- CLI


def _define_flags():
  from absl import flags

  flags.DEFINE_string("images", None, ".npz with uint8 images [N, H, W, C] and labels [N].")
  flags.DEFINE_string("workdir", None, "A trained run's workdir (default: train a demo CNN).")
  flags.DEFINE_string("out", "calibration", "Output directory.")
  flags.DEFINE_string("names", "", "Comma-separated corruptions (default: the 15 standard).")
  flags.DEFINE_string("base_table", "standard", "standard | refined | refined_cifar100.")
  flags.DEFINE_float("floor", None, "Target accuracy at severity 5 (default: mean sev-5).")
  flags.DEFINE_integer("iterations", 7, "Bisection steps per severity.")
  flags.DEFINE_integer("num_images", 0, "Calibrate on the first N images (0 = all).")
  flags.DEFINE_string("train_images", None, "Demo model: train on this .npz (default: the "
                      "first half of --images, calibrating on the second).")
  flags.DEFINE_integer("train_size", 0, "Demo model: train on the first N images (0 = all).")
  flags.DEFINE_integer("train_steps", 300, "Demo model: training steps.")
  flags.DEFINE_integer("width", 16, "Demo model: width.")
  flags.DEFINE_string("label", None, "Column label of the table (default: the .npz name).")
  flags.DEFINE_integer("seed", 0, "Seed of the corruption keys (and the demo model).")
  flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")


def main(argv, overrides):
  del argv
  from absl import flags

  from experiments import cli

  f = flags.FLAGS
  if overrides:
    raise cli.UsageError("calibrate_severities takes no --config.* overrides")
  if not f.images:
    raise cli.UsageError("--images=PATH.npz is required")
  if not os.path.isfile(f.images):
    raise cli.UsageError(f"--images: {f.images} not found")
  from drojax import corruptions

  names = [n for n in f.names.split(",") if n] or None
  for n in names or ():
    cli.check_choice(n, list(corruptions.NAMES), "--names")
  cli.check_choice(f.base_table, list(corruptions.TABLES), "--base_table")
  if f.floor is not None and not 0.0 <= f.floor <= 1.0:
    raise cli.UsageError(f"--floor must be in [0, 1]; got {f.floor}")
  if f.train_images and not os.path.isfile(f.train_images):
    raise cli.UsageError(f"--train_images: {f.train_images} not found")
  if (f.iterations < 1 or f.num_images < 0 or f.train_steps < 1 or f.batch_size < 1
      or f.train_size < 0):
    raise cli.UsageError("--iterations, --train_steps, --batch_size must be >= 1 and "
                         "--num_images >= 0")
  run(images_path=f.images, out=f.out, workdir=f.workdir, names=names,
      base_table=f.base_table, floor=f.floor, iterations=f.iterations,
      num_images=f.num_images, train_steps=f.train_steps, width=f.width, label=f.label,
      seed=f.seed, batch_size=f.batch_size, train_images_path=f.train_images,
      train_size=f.train_size)


if __name__ == "__main__":
  from experiments import cli as _cli

  _define_flags()
  _cli.run_main(main)
