"""Var-DRO's own diagnostics (``--config.var_dro_diagnostics=true``, the seed's check 2).

After each epoch: the tracked per-example loss variance (``TrackerState.var``) of every training
example, and the weight each example gets in its batch of that epoch (``B x q_i``: 1 is the
uniform weight), summarised by group and by flipped-label status (the group-shift benchmarks'
25 % label noise) into ``metrics.jsonl`` (``eval_var_group<g>``, ``eval_weight_group<g>``,
``eval_var_flipped`` / ``_clean``, ``eval_weight_flipped`` / ``_clean`` and the share of flipped
and minority-group examples among the 10 % of highest variance). The arrays go to
``var_dro_diagnostics.npz`` (one row per epoch) and ``var_dro_diagnostics.png`` plots the
variance distribution by group (and flipped vs clean) over training.

The weights are recomputed at the end of the epoch: the epoch's batches (the same order as
training), their losses under the end-of-epoch parameters in inference mode, the tracked variances
and means and the schedule's ``eps_max`` at the epoch's last step, weighted as in training
(``drojax.objectives.tracked_weights``). Training reads each example's variance after its step's
tracker update (the paper's order), and each example is in one batch per epoch, so the end-of-epoch
tracker holds exactly the variances (and, for ``schedule='loss'``, the means) its step used; only
the losses differ (its step's parameters, augmentation and train mode), so the weights approximate,
not replay, the weights of the steps.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

FILE = "var_dro_diagnostics.npz"
PLOT = "var_dro_diagnostics.png"
OBJECTIVES = ("var_dro", "var_dro_vrex")


def applies(method: str) -> bool:
  """Whether ``method`` trains with Var-DRO's tracker (what the diagnostics read)."""
  from drojax import methods

  return methods.TABLE.get(method, (None, None))[1] in OBJECTIVES


def _flipped(config, train_ds) -> np.ndarray | None:
  from drojax.data import group_shift

  if config.dataset not in group_shift.BENCHMARKS:
    return None
  from experiments.train import resolve_data_dir

  full = group_shift.load_group_shift(config.dataset, "train",
                                      data_dir=resolve_data_dir(None, config))
  where = {int(i): k for k, i in enumerate(full.dataset.ids)}
  flipped = full.label_flipped[[where[int(i)] for i in train_ds.ids]]
  # A benchmark without label noise (dominoes) has no flipped-vs-clean split to summarise.
  return flipped if flipped.any() else None


def make_eval_fn(config, workdir: str, train_ds, model, method_config, steps_per_epoch: int):
  """``eval_fn(state, epoch) -> metrics`` for ``drojax.loop.fit`` (writes the npz and plot)."""
  import jax
  import jax.numpy as jnp

  from drojax import data, losses
  from drojax import groups as dro_groups
  from drojax.objectives import tracked_weights

  mc = method_config
  flipped = _flipped(config, train_ds)
  groups = train_ds.groups
  path = os.path.join(workdir, FILE)

  @jax.jit
  def batch_losses(variables, images, labels):
    logits = model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
    return losses.cross_entropy(logits, labels)

  @jax.jit
  def batch_weights(batch_loss, tracker, ids, step):
    q, _ = tracked_weights(tracker, ids, batch_loss, step, eps_min=mc.var_dro_eps_min,
                           eps_max=mc.var_dro_eps_max, warmup_steps=mc.var_dro_warmup_steps,
                           ramp_steps=mc.var_dro_ramp_steps, schedule=mc.var_dro_schedule,
                           num_classes=model.num_classes)
    return q * q.shape[0]

  def eval_fn(state, epoch: int) -> dict[str, float]:
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    tracker = jax.device_put(jax.device_get(state.objective_state))  # one copy per epoch
    seen = np.asarray(tracker.seen)
    step = (epoch + 1) * steps_per_epoch - 1
    row = {int(i): k for k, i in enumerate(train_ds.ids)}
    weight = np.full(len(train_ds), np.nan)
    for batch in data.epoch_batches(train_ds, batch_size=config.batch_size, seed=config.seed,
                                    epoch=epoch):
      if not np.all(seen[batch["id"]]):
        raise ValueError(f"the tracker has not seen every example of epoch {epoch}'s batches: "
                         "the diagnostics need the epoch's training batches")
      loss = batch_losses(variables, batch["image"], batch["label"])
      w = batch_weights(loss, tracker, batch["id"], step)
      weight[[row[int(i)] for i in batch["id"]]] = np.asarray(w)
    var = np.asarray(tracker.var)[train_ds.ids]
    _append(path, epoch, var, weight)
    return dro_groups.summarize_by_group(var, weight, groups=groups, flipped=flipped)

  return eval_fn


def _append(path: str, epoch: int, var: np.ndarray, weight: np.ndarray) -> None:
  import jax

  if jax.process_index() != 0:
    return
  old = dict(np.load(path)) if os.path.isfile(path) else {}
  keep = old.get("epoch", np.zeros(0, int)) < epoch  # a resumed epoch replaces its row
  arrays = {"epoch": np.r_[old.get("epoch", np.zeros(0, int))[keep], epoch]}
  for name, value in (("var", var), ("weight", weight)):
    prev = old.get(name, np.zeros((0, len(value))))[keep]
    arrays[name] = np.concatenate([prev, value[None]])
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def plot(workdir: str, train_ds, flipped: np.ndarray | None) -> str | None:
  """``var_dro_diagnostics.png``: median and interquartile range of the tracked variance by
  group (left) and by flipped-label status (right) over the epochs."""
  path = os.path.join(workdir, FILE)
  if not os.path.isfile(path):
    return None
  from experiments import reporting

  d = np.load(path)
  epochs, var = d["epoch"] + 1, d["var"]
  splits = []
  if train_ds.groups is not None:
    splits.append(("group", [(f"group {g}", train_ds.groups == g)
                             for g in np.unique(train_ds.groups)]))
  if flipped is not None:
    splits.append(("label", [("flipped", flipped), ("clean", ~flipped)]))
  if not splits:
    splits.append(("all", [("all", np.ones(var.shape[1], bool))]))
  fig, axes = reporting.pyplot().subplots(1, len(splits), figsize=(5 * len(splits), 3.5),
                                          squeeze=False)
  for ax, (title, parts) in zip(axes[0], splits):
    for label, m in parts:
      q = np.quantile(var[:, m], [0.25, 0.5, 0.75], axis=1)
      ax.plot(epochs, q[1], label=label)
      ax.fill_between(epochs, q[0], q[2], alpha=0.2)
    ax.set(xlabel="epoch", ylabel="tracked loss variance", title=f"by {title}", yscale="log")
    ax.legend(fontsize=8)
  return reporting.save_figure(fig, os.path.join(workdir, PLOT))


def finish(config, workdir: str, train_ds) -> dict[str, Any]:
  """The plot, and the last epoch's summary for ``results.json``."""
  import jax

  if jax.process_index() != 0:
    return {}
  flipped = _flipped(config, train_ds)
  png = plot(workdir, train_ds, flipped)
  from drojax import groups

  d = np.load(os.path.join(workdir, FILE))
  return {"var_dro_diagnostics": {"plot": png, "last_epoch": groups.summarize_by_group(
      d["var"][-1], d["weight"][-1], groups=train_ds.groups, flipped=flipped)}}
