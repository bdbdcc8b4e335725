r"""Calibrate CIFAR-C severities so accuracy falls linearly from clean to a floor, for every type,
as DRO-Augment's refined benchmark did, with :func:`drojax.evaluate.calibration.calibrate` (the
method, its targets and its limits are described there; a demo run: ``docs/calibration.md``).

Writes to ``--out``: ``calibrated_severities.md`` (the parameters per severity as the refined
section of ``shared/reference/cifar_c_severities.md`` writes them, the continuous severities,
the accuracies before, at the base table's severities 1..5, and after), ``calibration.json`` and
``calibration.png``. A row marked capped did not reach its target within the table's severity
5: use a harder ``--base_table`` or a higher ``--floor``.

A trained run's workdir, evaluated on an .npz of uint8 ``images`` and ``labels``::

  python -m experiments.calibrate_severities --workdir=runs/c10_erm \
      --images=../shared/data/cifar10_test_lossless_first1000.npz --out=runs/calibration

Without ``--workdir``, a demo: a small reference CNN trained for ``--train_steps`` on the first
half of ``--images`` (or on ``--train_images``, its first ``--train_size``), calibrated on the
(second half of) ``--images``::

  python -m experiments.calibrate_severities \
      --images=../shared/data/cifar10_test_lossless_first1000.npz \
      --train_images=../shared/data/cifar10_train.npz --train_size=20000 --train_steps=1500 \
      --width=32 --label=CIFAR-10 --out=/tmp/calibration
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from experiments import cli, flag_defs
from experiments.formatting import md_table, pct


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
  percents = lambda values: " ".join(pct(a, digits=1) for a in values)
  lines = [f"## Calibrated ({label}; base table {calibration['base_table']})", "",
           f"Clean accuracy {pct(calibration['clean_accuracy'], sign='%')}, floor "
           f"{pct(calibration['floor'], sign='%')}, targets "
           f"{', '.join(pct(t, digits=1) for t in calibration['targets'])} (%), "
           f"{calibration['num_images']} images.", "",
           *md_table(["corruption", f"{label} sev 1..5"],
                     [[name, format_row(r["params"])] for name, r in rows.items()]), "",
           *md_table(["corruption", "continuous severity (base table)", "accuracy before (%)",
                      "accuracy after (%)", "capped"],
                     [[name, " ".join(f"{s:.3f}" for s in r["severity"]), percents(r["before"]),
                       percents(r["after"]), "yes" if any(r["capped"]) else ""]
                      for name, r in rows.items()])]
  lines += ["", f"Mean absolute distance to the linear targets: before "
            f"{pct(calibration['mean_abs_error_before'])} points, after "
            f"{pct(calibration['mean_abs_error_after'])} points."]
  return "\n".join(lines) + "\n"


def plot_calibration(calibration: Mapping[str, Any], path: str) -> str:
  """Accuracy vs severity before (base table) and after calibration, with the targets."""
  from experiments.reporting import pyplot, save_figure

  fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.5), sharey=True)
  xs = list(range(len(calibration["targets"]) + 1))
  clean = 100 * calibration["clean_accuracy"]
  tgt = [clean] + [100 * t for t in calibration["targets"]]
  for ax, key, title in ((axes[0], "before", f"before ({calibration['base_table']} table)"),
                         (axes[1], "after", "after calibration")):
    for name, r in calibration["corruptions"].items():
      ax.plot(xs, [clean] + [100 * a for a in r[key]], marker="o", lw=1, label=name)
    ax.plot(xs, tgt, "k--", lw=2, label="linear target")
    ax.set(title=title, xlabel="severity (0 = clean)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy (%)")
  axes[1].legend(fontsize=7, ncol=2)
  return save_figure(fig, path)


def write_calibration(calibration: Mapping[str, Any], out: str, *, label: str) -> dict[str, str]:
  """Writes ``calibrated_severities.md``, ``calibration.json`` and ``calibration.png``."""
  os.makedirs(out, exist_ok=True)
  paths = {kind: os.path.join(out, name) for kind, name in (
      ("md", "calibrated_severities.md"), ("json", "calibration.json"), ("png", "calibration.png"))}
  with open(paths["md"], "w") as f:
    f.write(markdown_table(calibration, label=label))
  with open(paths["json"], "w") as f:
    json.dump(calibration, f, indent=2, allow_nan=False, default=lambda v: None)
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
  from drojax import train as train_lib
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
  return train.bound_model(train.train(c, workdir, ds, mesh=train_lib.make_mesh(1)))


def load_workdir_model(workdir: str, num_classes: int):
  """The trained model of an experiment workdir as a ``BoundModel`` (eval mode).

  Reads ``config.json`` (``model``, ``width``) and the parameters and BatchNorm statistics of
  the latest checkpoint under ``workdir/checkpoints`` (``drojax.checkpoint.Checkpointer``, as
  saved: the optimizer's configuration does not need to be rebuilt).
  """
  from drojax import evaluate, models
  from drojax.checkpoint import Checkpointer

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
  return evaluate.bind(model, variables)


def run(*, images: str, out: str, workdir: str | None = None,
        names: Sequence[str] | None = None, base_table: str = "standard",
        floor: float | None = None, iterations: int = 7, num_images: int = 0,
        train_steps: int = 300, width: int = 16, label: str | None = None, seed: int = 0,
        batch_size: int = 256, train_images: str | None = None,
        train_size: int = 0) -> dict[str, Any]:
  """The CLI's work, callable from Python: load, (train,) calibrate, print and write."""
  import jax

  from drojax import data
  from drojax.evaluate import calibration

  test = data.load_npz(images)
  cal_x, cal_y, num_classes = test.images, test.labels, test.num_classes
  if workdir:
    model = load_workdir_model(workdir, num_classes)
  else:
    if train_images:  # the demo model trained on another .npz (e.g. the training set)
      train_ds = data.load_npz(train_images)
      tr_x, tr_y = train_ds.images, train_ds.labels
      num_classes = max(num_classes, train_ds.num_classes)
    else:  # trained on the first half, calibrated on the second
      half = cal_x.shape[0] // 2
      tr_x, tr_y, cal_x, cal_y = cal_x[:half], cal_y[:half], cal_x[half:], cal_y[half:]
    if train_size:
      tr_x, tr_y = tr_x[:train_size], tr_y[:train_size]
    print(f"training a reference small_cnn (width {width}, ~{train_steps} steps) on "
          f"{tr_x.shape[0]} images", flush=True)
    model = train_reference_model(tr_x, tr_y, num_classes=num_classes, steps=train_steps,
                                  width=width, seed=seed,
                                  workdir=os.path.join(out, "reference_model"))
  if num_images:
    cal_x, cal_y = cal_x[:num_images], cal_y[:num_images]
  cal = calibration.calibrate(jax.random.key(seed), model, cal_x, cal_y, names=names,
                              base_table=base_table, floor=floor, iterations=iterations,
                              batch_size=batch_size, log=lambda line: print(line, flush=True))
  cal["seed"] = seed
  label = label or os.path.splitext(os.path.basename(images))[0]
  paths = write_calibration(cal, out, label=label)
  print(markdown_table(cal, label=label))
  print(f"wrote {paths}")
  cal["paths"] = paths
  return cal


# ------------------------------------------------------------------------------- CLI

_FLAGS = {
    "images": ("string", None, ".npz with uint8 images [N, H, W, C] and labels [N]."),
    "workdir": ("string", None, "A trained run's workdir (default: train a demo CNN)."),
    "out": ("string", "calibration", "Output directory."),
    "names": ("string", "", "Comma-separated corruptions (default: the 15 standard)."),
    "base_table": ("string", "standard", "standard | refined | refined_cifar100."),
    "floor": ("float", None, "Target accuracy at severity 5 (default: mean sev-5)."),
    "iterations": ("integer", 7, "Bisection steps per severity."),
    "num_images": ("integer", 0, "Calibrate on the first N images (0 = all)."),
    "train_images": ("string", None, "Demo model: train on this .npz (default: the first half "
                     "of --images, calibrating on the second)."),
    "train_size": ("integer", 0, "Demo model: train on the first N images (0 = all)."),
    "train_steps": ("integer", 300, "Demo model: training steps."),
    "width": ("integer", 16, "Demo model: width."),
    "label": ("string", None, "Column label of the table (default: the .npz name)."),
    "seed": ("integer", 0, "Seed of the corruption keys (and the demo model)."),
    "batch_size": ("integer", 256, "Evaluation batch size."),
}


@flag_defs.uses(own=_FLAGS)
def main(argv, overrides):
  del argv
  from absl import flags

  from drojax import corruptions

  f = flags.FLAGS
  if overrides:
    raise cli.UsageError("calibrate_severities takes no --config.* overrides")
  if not f.images:
    raise cli.UsageError("--images=PATH.npz is required")
  for flag in ("images", "train_images"):
    if f[flag].value and not os.path.isfile(f[flag].value):
      raise cli.UsageError(f"--{flag}: {f[flag].value} not found")
  names = [n for n in f.names.split(",") if n] or None
  for n in names or ():
    flag_defs.check_choice(n, list(corruptions.NAMES), "--names")
  flag_defs.check_choice(f.base_table, list(corruptions.TABLES), "--base_table")
  if f.floor is not None and not 0.0 <= f.floor <= 1.0:
    raise cli.UsageError(f"--floor must be in [0, 1]; got {f.floor}")
  for flag, minimum in (("iterations", 1), ("train_steps", 1), ("batch_size", 1),
                        ("num_images", 0), ("train_size", 0)):
    if f[flag].value < minimum:
      raise cli.UsageError(f"--{flag} must be >= {minimum}; got {f[flag].value}")
  run(**{name: f[name].value for name in _FLAGS if name != "names"}, names=names)


if __name__ == "__main__":
  cli.run_main(main)
