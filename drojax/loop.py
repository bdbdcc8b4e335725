"""The training loop: epochs, progress bar, ``metrics.jsonl``, checkpoints, resume, NaN guard.

``fit`` drives a jitted train step (:func:`drojax.train.make_train_step`) over batches from a
callable ``batches_for_epoch(epoch, start_batch)``; it does not know where data comes from.
Resuming is exact: the checkpoint holds the state (with its RNG key) and the data position,
and the data source must yield the same batches for the same ``(epoch, start_batch)``
(deterministic shuffling from seed and epoch), so a run killed at any point and re-run ends
with the same parameters as an uninterrupted run.

Checkpoints are saved every ``checkpoint_every_steps`` steps AND at the end of every epoch
(tested, on purpose: an epoch's evaluation and its record follow a saved state, and a resume
starts at an epoch boundary where it can). With few steps per epoch (full-batch training: one)
that is a save per epoch whatever ``checkpoint_every_steps`` says.

This is an I/O module (it writes the work directory and a progress bar to stderr).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Mapping

import jax

from drojax.checkpoint import Checkpointer

BatchesFn = Callable[[int, int], Iterable[Mapping[str, Any]]]

# Which training term a metric belongs to, in the order the step computes them: the guard names
# the first non-finite one (an inf loss also makes the gradient non-finite; NaN Var-DRO weights
# also make the weighted objective NaN). ``mean_loss`` is the unweighted per-example loss,
# ``loss`` the objective (after penalty and weights).
_TERMS = (("mean_loss", "loss"), ("penalty", "penalty"), ("weight", "weights"),
          ("loss", "objective"), ("grad", "gradient"))


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite value; the CLI maps it to a non-zero exit code.

  Attributes:
    step: the optimizer step (1-based: the step whose update produced it).
    term: ``loss`` (per-example), ``penalty``, ``weights``, ``objective`` or ``gradient``: the
      first non-finite one in the order the step computes them.
    metric: the metric's name; value: its value.
    last_checkpoint: the step of the last good checkpoint, or ``None``.
  """

  def __init__(self, step: int, term: str, metric: str, value: float,
               last_checkpoint: int | None, directory: str | None):
    self.step, self.term, self.metric, self.value = step, term, metric, value
    self.last_checkpoint = last_checkpoint
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept in {directory}"
            if last_checkpoint is not None else "no checkpoint was written")
    super().__init__(f"non-finite {term} at step {step} ({metric}={value}); training stopped, "
                     f"{kept}. Lower the learning rate or the method's robustness strength "
                     f"and re-run.")


_clock = time.perf_counter  # the training time's clock (tests replace it)


@dataclasses.dataclass
class FitResult:
  """What ``fit`` returns."""

  state: Any
  steps: int  # optimizer steps at the end (state.step)
  resumed_from: int | None  # checkpoint step the run resumed from, or None
  # wall time spent training (not restoring), summed over the resumed runs: each checkpoint
  # records the total at its step, so time after the last checkpoint of a killed run is lost
  # with its steps
  train_seconds: float
  last_metrics: dict[str, float]


def _term(metric: str) -> tuple[int, str]:
  """``(rank, term)``: the metric's place in ``_TERMS`` (others after them) and its term."""
  for rank, (key, term) in enumerate(_TERMS):
    if key in metric:
      return rank, term
  return len(_TERMS), metric


def _check_finite(metrics: Mapping[str, float], step: int, ckpt: Checkpointer | None) -> None:
  bad = [name for name, value in metrics.items() if not math.isfinite(value)]
  if bad:
    name = min(bad, key=lambda n: _term(n)[0])  # stable: ties keep the metrics' order
    last = ckpt.latest_step() if ckpt is not None else None
    raise NonFiniteError(step, _term(name)[1], name, metrics[name], last,
                         ckpt.directory if ckpt is not None else None)


def _truncate_metrics(path: str, max_step: int) -> None:
  """Drops records written after the checkpoint we resume from (they will be re-done), so each
  step has its record once across kills (also before the first checkpoint: ``max_step=0``),
  failed saves and resumes."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut by a kill
      if int(rec.get("step", 0)) <= max_step:
        kept.append(json.dumps(rec))
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write("".join(line + "\n" for line in kept))
  os.replace(tmp, path)


def fit(state: Any, train_step: Callable[[Any, Any], tuple[Any, Mapping[str, Any]]],
        batches_for_epoch: BatchesFn, *, num_epochs: int, steps_per_epoch: int,
        workdir: str | None = None, checkpoint_every_steps: int = 0, keep_checkpoints: int = 3,
        place_batch: Callable[[Mapping[str, Any]], Any] | None = None,
        eval_fn: Callable[[Any, int], Mapping[str, float]] | None = None,
        on_step: Callable[[int, Mapping[str, float]], None] | None = None,
        log_every_steps: int = 1, progress: bool = True,
        images_per_batch: int | None = None) -> FitResult:
  """Trains for ``num_epochs`` epochs, resuming from ``workdir``'s latest checkpoint.

  Args:
    state: the initial ``TrainState`` (also the restore target: structure and shardings).
    train_step: ``train_step(state, batch) -> (state, metrics)``; it may donate ``state``.
    batches_for_epoch: ``fn(epoch, start_batch)`` yielding the batches of ``epoch`` from index
      ``start_batch`` on, the same ones for the same arguments.
    num_epochs: epochs to train in total (a resumed run continues to this number).
    steps_per_epoch: batches per epoch (progress bar, data position).
    workdir: where ``checkpoints/`` and ``metrics.jsonl`` go; ``None``: no files, no resume.
    checkpoint_every_steps: also save every this many steps; the end of every epoch is
      saved whatever it is (0: only there).
    keep_checkpoints: how many checkpoints to keep.
    place_batch: e.g. ``lambda b: drojax.data.shard_batch(b, mesh)``; identity when ``None``.
    eval_fn: ``fn(state, epoch) -> metrics`` run after each epoch (logged with ``eval_``).
    on_step: ``fn(step, metrics)`` after each step (host floats).
    log_every_steps: write a ``metrics.jsonl`` record every this many steps.
    progress: show a tqdm bar on stderr (rate, ETA, loss, accuracy). While the first step of
      the call runs (it compiles, or loads from the compilation cache) the bar says so, and
      its clock starts after it, so the rate and ETA are those of the compiled step.
    images_per_batch: to show images/s in the bar.

  Returns:
    A :class:`FitResult`.

  Raises:
    NonFiniteError: a metric (loss, penalty, weights, gradient norm) was NaN/inf; the state of
      that step is not saved.
  """
  if num_epochs < 0 or steps_per_epoch < 1:
    raise ValueError(f"need num_epochs >= 0 and steps_per_epoch >= 1, got {num_epochs}, "
                     f"{steps_per_epoch}")
  ckpt = None
  metrics_path = None
  resumed_from = None
  epoch, start_batch = 0, 0
  prior_seconds = 0.0
  # Several hosts share the work directory: only the first writes metrics (orbax coordinates
  # the checkpoint writes itself).
  is_main = jax.process_index() == 0
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)
    metrics_path = os.path.join(workdir, "metrics.jsonl") if is_main else None
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=keep_checkpoints)
    restored = ckpt.restore_latest(state)
    if restored is not None:
      state, resumed_from = restored.state, restored.step
      epoch, start_batch = int(restored.meta["epoch"]), int(restored.meta["batch"])
      prior_seconds = float(restored.meta.get("seconds", 0.0))
  step = int(jax.device_get(state.step))
  if metrics_path is not None:
    _truncate_metrics(metrics_path, step)  # records past the restored step are re-done
  last: dict[str, float] = {}
  seconds = prior_seconds
  t0 = _clock()
  log = open(metrics_path, "a") if metrics_path else None

  def record(rec: dict[str, Any]) -> None:
    if log is not None:
      log.write(json.dumps(rec) + "\n")
      log.flush()

  def save(epoch_: int, batch_: int) -> None:
    if ckpt is not None:
      if batch_ >= steps_per_epoch:
        epoch_, batch_ = epoch_ + 1, 0
      ckpt.save(state, meta={"epoch": epoch_, "batch": batch_, "step": step,
                             "seconds": seconds + _clock() - t0})

  bar = None
  compiling = True  # the first step of this call compiles the train step (or loads it)
  try:
    from tqdm.auto import tqdm
    while epoch < num_epochs:
      bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{num_epochs}",
                 unit="step", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                 leave=True)
      t0 = _clock()
      batch_index = start_batch
      for batch in batches_for_epoch(epoch, start_batch):
        if place_batch is not None:
          batch = place_batch(batch)
        if compiling:
          bar.bar_format = "{desc}: {n_fmt}/{total_fmt} compiling the train step..."
          bar.refresh()
        state, metrics = train_step(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
        step += 1
        batch_index += 1
        _check_finite(metrics, step, ckpt)
        last = metrics
        if step % log_every_steps == 0:
          record({"step": step, "epoch": epoch, "batch": batch_index, **metrics})
        if on_step is not None:
          on_step(step, metrics)
        postfix = {"loss": f"{metrics.get('loss', float('nan')):.4f}",
                   "acc": f"{metrics.get('accuracy', float('nan')):.3f}"}
        if images_per_batch and bar.format_dict.get("rate"):
          postfix["img/s"] = f"{bar.format_dict['rate'] * images_per_batch:.0f}"
        bar.set_postfix(postfix, refresh=False)
        if compiling:  # restart the clock: the ETA is not the compilation's
          compiling = False
          bar.bar_format = None
          bar.reset(total=steps_per_epoch)
          bar.initial = bar.n = batch_index
          bar.refresh()
        else:
          bar.update(1)
        if (checkpoint_every_steps and step % checkpoint_every_steps == 0
            and batch_index < steps_per_epoch):
          save(epoch, batch_index)
      bar.close()
      seconds += _clock() - t0
      t0 = _clock()
      save(epoch, steps_per_epoch)
      if eval_fn is not None:
        ev = {f"eval_{k}": float(v) for k, v in dict(eval_fn(state, epoch)).items()}
        record({"step": step, "epoch": epoch, **ev})
      epoch, start_batch = epoch + 1, 0
  finally:
    # Closed here too, so that an interruption's message comes after the bar's last line.
    if bar is not None:
      bar.close()
    if log is not None:
      log.close()
    if ckpt is not None:
      ckpt.close()
  return FitResult(state=state, steps=step, resumed_from=resumed_from, train_seconds=seconds,
                   last_metrics=last)


__all__ = ["BatchesFn", "FitResult", "NonFiniteError", "fit"]
