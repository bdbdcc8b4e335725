"""Group-shift runs: the data a method needs, its counts from the data, validation selection.

* :func:`check` (before anything is written): a method that needs group or environment ids on
  data without them, a group or environment with no training example, fewer than 2 training
  environments for V-REx / IRM, configured counts that the data contradicts;
* :func:`prepare` (at training): ``num_groups`` / ``num_environments`` / ``group_counts`` left
  at 0 / () are taken from the training data, and a method that needs environments trains on
  the groups where the data has no environments;
* :func:`validation_results`: accuracy and group accuracy on the benchmark's validation split
  (``results.json["validation"]``), what model selection reads;
* :func:`select`: the run with the best worst-group, or average, validation accuracy.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from experiments import cli

GROUP_DATASETS = "waterbirds, colored_digits, colored_fashion_mnist, dominoes"


def needs(method: str) -> str | None:
  """``"group"``, ``"environment"`` or None: the ids ``method``'s objective reads per batch."""
  from drojax import methods

  entry = methods.TABLE.get(method)
  return methods.NEEDS.get(entry[1]) if entry else None


def _ids(train_ds, need: str):
  """(ids, what they are) the method trains on."""
  if need == "environment" and train_ds.environments is not None:
    return train_ds.environments, "environments"
  return train_ds.groups, "groups"


def check(method: str, method_config, train_ds) -> None:
  """Raises ``cli.UsageError`` when ``train_ds`` cannot train ``method`` (one line)."""
  need = needs(method)
  if need is None:
    return
  if train_ds.groups is None:
    raise cli.UsageError(f"--method={method} needs {need} labels, but the training data "
                         f"{train_ds.name} has none; use a dataset with groups ({GROUP_DATASETS})")
  ids, what = _ids(train_ds, need)
  field = "num_groups" if need == "group" else "num_environments"
  configured = getattr(method_config, field)
  count = configured or int(ids.max()) + 1
  if configured and int(ids.max()) >= configured:
    raise cli.UsageError(f"--config.method_config.{field}={configured}, but the training data "
                         f"has {what} ids up to {int(ids.max())}")
  sizes = np.bincount(ids, minlength=count)
  if np.any(sizes == 0):
    empty = np.flatnonzero(sizes == 0).tolist()
    raise cli.UsageError(f"--method={method}: {what} {empty} of the {count} have no training "
                         f"example in {train_ds.name} (sizes {sizes.tolist()}); a larger "
                         f"train_subset, or data where every one occurs")
  if need == "environment" and count < 2:
    raise cli.UsageError(f"--method={method} compares environments: it needs at least 2, the "
                         f"training data has {count} ({what})")
  counts = tuple(method_config.group_counts)
  if counts and need == "group" and counts != tuple(sizes.tolist()):
    raise cli.UsageError(f"--config.method_config.group_counts={counts}, but the training data "
                         f"has {tuple(sizes.tolist())}")


def prepare(method: str, method_config, train_ds):
  """``(method_config, train_ds)`` with the counts and ids ``method`` trains on filled in."""
  need = needs(method)
  if need is None:
    return method_config, train_ds
  check(method, method_config, train_ds)
  ids, what = _ids(train_ds, need)
  if need == "environment" and what == "groups":
    train_ds = dataclasses.replace(train_ds, environments=train_ds.groups)
  sizes = np.bincount(ids)
  if need == "group":
    method_config = dataclasses.replace(
        method_config, num_groups=method_config.num_groups or len(sizes),
        group_counts=tuple(method_config.group_counts) or tuple(int(n) for n in sizes))
  else:
    method_config = dataclasses.replace(
        method_config, num_environments=method_config.num_environments or len(sizes))
  return method_config, train_ds


def validation_results(config, trained, validation_ds) -> dict[str, Any]:
  """``{"validation": {"accuracy", "group_accuracy", ...}}`` of ``trained`` on the validation
  split (group accuracies weighted by the validation split's own group sizes)."""
  from drojax import evaluate as ev
  from experiments import train

  bound = train.bound_model(trained)
  predictions = ev.predict(bound, validation_ds.images, batch_size=config.eval.batch_size,
                           progress=False)
  accuracy = float(np.mean(predictions == validation_ds.labels))
  groups = ev.group_accuracy(predictions, validation_ds.labels, validation_ds.groups)
  return {"validation": {"accuracy": accuracy, "group_accuracy": groups,
                         "num_validation": len(validation_ds)}}


def two_stage(method: str) -> bool:
  """Whether ``method`` trains an identification model first (JTT)."""
  from drojax import methods

  return methods.TABLE.get(method, (None, None))[1] == "jtt"


IDENTIFICATION_DIR = "identification"


def train_two_stage(config, workdir: str, train_ds, *, mesh):
  """JTT (Liu et al. 2021): ERM for ``jtt_epochs`` into ``workdir/identification``, then a new
  model for ``num_epochs`` in ``workdir`` with the identification model's training errors
  weighted ``jtt_lambda_up`` (``drojax.objectives.weighted_erm``; the weights are its state).

  Each stage resumes from its own checkpoints; a finished first stage is read back and gives
  the same errors again. The returned training time is both stages'.
  """
  from drojax import evaluate as ev
  from drojax import methods, objectives
  from experiments import train as runs

  mc = runs.method_config(config)
  first = config.copy_and_resolve_references()
  with first.unlocked():
    first.num_epochs = mc.jtt_epochs
    first.warmup_epochs = min(first.warmup_epochs, mc.jtt_epochs - 1)
  stage1 = runs.train(first, os.path.join(workdir, IDENTIFICATION_DIR), train_ds, mesh=mesh,
                        method=methods.get_method(config.method, mc))
  predictions = ev.predict(runs.bound_model(runs.local_copy(stage1)), train_ds.images,
                           batch_size=config.eval.batch_size, progress=False)
  errors = predictions != train_ds.labels
  weights = np.ones(int(train_ds.ids.max()) + 1, np.float32)
  weights[train_ds.ids[errors]] = mc.jtt_lambda_up
  method = dataclasses.replace(methods.get_method(config.method, mc),
                               objective=objectives.weighted_erm(weights))
  stage2 = runs.train(config, workdir, train_ds, mesh=mesh, method=method)
  return dataclasses.replace(stage2, train_seconds=stage1.train_seconds + stage2.train_seconds,
                             steps=stage1.steps + stage2.steps)


SELECTIONS = ("worst_group", "average")


def select(results: Sequence[dict[str, Any]], by: str) -> int:
  """The index of the run with the best validation ``by`` accuracy (ties: the first).

  ``worst_group``: the worst group's validation accuracy (group labels on validation only);
  ``average``: the plain validation accuracy (no group label at all).
  """
  if by not in SELECTIONS:
    raise ValueError(f"by must be one of {SELECTIONS}, got {by!r}")
  if not results:
    raise ValueError("nothing to select from")

  def score(r):
    v = r["validation"]
    return v["group_accuracy"]["worst_group"] if by == "worst_group" else v["accuracy"]

  scores = [score(r) for r in results]
  return int(np.argmax(scores))
