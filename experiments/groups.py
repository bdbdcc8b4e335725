"""Group-shift runs: ``drojax.groups``' data checks as one-line CLI errors before anything is
written (:func:`check`), the counts filled in from the training data (:func:`prepare`),
validation results for model selection, and JTT's two stages (:func:`train_two_stage`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from experiments import cli

GROUP_DATASETS = "waterbirds, colored_digits, colored_fashion_mnist, dominoes"
IDENTIFICATION_DIR = "identification"


def check(method: str, method_config, train_ds) -> np.ndarray | None:
  """The training group (or environment) sizes; ``cli.UsageError`` (one line) when
  ``train_ds`` cannot train ``method``."""
  from drojax import groups, methods

  need = methods.needs(method)
  if need is None:
    return None
  field = "num_groups" if need == "group" else "num_environments"
  try:
    return groups.check_training_data(train_ds, need, count=getattr(method_config, field),
                                      group_counts=method_config.group_counts)
  except ValueError as e:
    hint = f"; use a dataset with groups ({GROUP_DATASETS})" if train_ds.groups is None else ""
    if str(e).startswith(("num_", "group_counts")):  # a configured count the data contradicts
      raise cli.UsageError(f"--config.method_config.{e}") from None
    sep = " " if str(e).startswith(("needs", "compares")) else ": "
    raise cli.UsageError(f"--method={method}{sep}{e}{hint}") from None


def prepare(method: str, method_config, train_ds):
  """``(method_config, train_ds)`` with the counts left at 0 / () taken from the training data;
  an environment method trains on the groups where the data has no environments."""
  sizes = check(method, method_config, train_ds)
  if sizes is None:
    return method_config, train_ds
  from drojax import methods

  if methods.needs(method) == "group":
    return dataclasses.replace(
        method_config, num_groups=method_config.num_groups or len(sizes),
        group_counts=tuple(method_config.group_counts) or tuple(int(n) for n in sizes)
    ), train_ds
  if train_ds.environments is None:
    train_ds = dataclasses.replace(train_ds, environments=train_ds.groups)
  return dataclasses.replace(
      method_config, num_environments=method_config.num_environments or len(sizes)), train_ds


def validation_results(config, trained, validation_ds) -> dict[str, Any]:
  """``{"validation": {"accuracy", "group_accuracy", ...}}`` of ``trained`` on the validation
  split (group accuracies weighted by the validation split's own group sizes)."""
  from drojax import evaluate as ev

  predictions = ev.predict(ev.bind(trained.model, trained.variables), validation_ds.images,
                           batch_size=config.eval.batch_size, progress=False)
  accuracy = float(np.mean(predictions == validation_ds.labels))
  groups = ev.group_accuracy(predictions, validation_ds.labels, validation_ds.groups)
  return {"validation": {"accuracy": accuracy, "group_accuracy": groups,
                         "num_validation": len(validation_ds)}}


def train_two_stage(config, workdir: str, train_ds, *, mesh):
  """JTT (Liu et al. 2021): ERM for ``jtt_epochs`` into ``workdir/identification``, then a new
  model for ``num_epochs`` in ``workdir`` with the identification model's training errors
  weighted ``jtt_lambda_up`` (``drojax.objectives.weighted_erm``; the weights are its state).

  Each stage resumes from its own checkpoints; a finished first stage is read back and gives
  the same errors again. The returned training time is both stages'.
  """
  from drojax import distributed, groups, methods, objectives
  from drojax import evaluate as ev
  from experiments import train as runs
  from experiments.configs import common

  mc = common.method_config(config)
  first = config.copy_and_resolve_references()
  with first.unlocked():
    first.num_epochs = mc.jtt_epochs
    first.warmup_epochs = min(first.warmup_epochs, mc.jtt_epochs - 1)
  stage1 = runs.train(first, os.path.join(workdir, IDENTIFICATION_DIR), train_ds, mesh=mesh,
                      method=methods.get_method(config.method, mc))
  bound = ev.bind(stage1.model, distributed.local_copy(stage1.variables))
  predictions = ev.predict(bound, train_ds.images, batch_size=config.eval.batch_size,
                           progress=False)
  weights = groups.jtt_weights(train_ds.ids, predictions != train_ds.labels,
                               num_examples=int(train_ds.ids.max()) + 1,
                               lambda_up=mc.jtt_lambda_up)
  method = dataclasses.replace(methods.get_method(config.method, mc),
                               objective=objectives.weighted_erm(weights))
  stage2 = runs.train(config, workdir, train_ds, mesh=mesh, method=method)
  return dataclasses.replace(stage2, train_seconds=stage1.train_seconds + stage2.train_seconds,
                             steps=stage1.steps + stage2.steps)
