"""The calls from the experiment flow into the library: build, train, evaluate, write.

Kept in one module so that ``runner.py`` stays about configs and workdirs, and the library's
training and evaluation APIs are met in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections


@dataclasses.dataclass
class Trained:
  """What evaluation needs from a finished (or resumed-and-finished) training run."""

  model: Any  # the Flax module
  variables: Any  # {'params': ..., 'batch_stats': ...} for model.apply in eval mode
  train_seconds: float  # wall time spent training, summed over resumed runs
  steps: int  # optimizer steps taken


def method_config(config: ml_collections.ConfigDict):
  from drojax.methods import MethodConfig

  return MethodConfig.from_dict(config.method_config.to_dict())


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  from drojax import models

  return models.get_model(config.model, num_classes=num_classes, width=config.width)


def _warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
  return config.warmup_epochs * total_steps // max(config.num_epochs, 1)


def learning_rate_fn(config: ml_collections.ConfigDict, total_steps: int):
  """The per-step learning rate of ``config`` (``drojax.train.make_learning_rate``)."""
  from drojax import train as train_lib

  return train_lib.make_learning_rate(total_steps, learning_rate=config.learning_rate,
                                      warmup_steps=_warmup_steps(config, total_steps),
                                      schedule=config.lr_schedule, end_learning_rate=config.lr_min)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """SGD (the DRO-Augment recipe, ``drojax.train.make_optimizer``) or Adam, per ``config``."""
  import optax

  from drojax import train as train_lib

  if config.optimizer == "sgd":
    return train_lib.make_optimizer(
        total_steps, learning_rate=config.learning_rate, momentum=config.momentum,
        nesterov=config.nesterov, weight_decay=config.weight_decay,
        warmup_steps=_warmup_steps(config, total_steps), schedule=config.lr_schedule,
        end_learning_rate=config.lr_min)
  parts = [optax.add_decayed_weights(config.weight_decay)] if config.weight_decay else []
  return optax.chain(*parts, optax.adam(learning_rate_fn(config, total_steps)))


def train(config: ml_collections.ConfigDict, workdir: str, train_ds, *, mesh) -> Trained:
  """Trains (or resumes, or finds finished) the run in ``workdir`` with ``drojax.loop.fit``.

  On several processes every process calls this with the same arguments: ``mesh`` spans all
  processes' devices, each process loads only its slice of every global batch (the rows its
  devices hold), and the global batch is assembled by ``drojax.data.shard_batch``. Only
  process 0 writes ``metrics.jsonl`` and ``train_seconds.json``; all take part in checkpoints.
  """
  import jax

  from drojax import data, loop, methods
  from drojax import train as train_lib

  model = build_model(config, train_ds.num_classes)
  method = methods.get_method(config.method, method_config(config))
  steps_per_epoch = data.num_batches(len(train_ds), config.batch_size)
  if steps_per_epoch < 1:
    from experiments import cli

    raise cli.UsageError(f"batch_size {config.batch_size} is larger than the {len(train_ds)} "
                         "training examples")
  total_steps = steps_per_epoch * config.num_epochs
  optimizer = make_optimizer(config, total_steps)
  # Replicated on the mesh from the start: the step's output state has this sharding, so the
  # second step reuses the first step's executable instead of compiling again.
  state = train_lib.create_train_state(
      jax.random.key(config.seed), model, optimizer, train_ds.image_shape, method=method,
      num_examples=int(train_ds.ids.max()) + 1, mesh=mesh)
  train_step = train_lib.make_train_step(method, model, mesh, optimizer=optimizer,
                                         learning_rate_fn=learning_rate_fn(config, total_steps))
  rows = data.process_rows(mesh, config.batch_size)

  def batches_for_epoch(epoch: int, start_batch: int):
    # Shuffled gather of this process's rows in a background thread, placed on the mesh as
    # the global batch (the same global batch for any number of processes).
    return data.device_batches(
        data.epoch_batches(train_ds, batch_size=config.batch_size, seed=config.seed,
                           epoch=epoch, start_batch=start_batch, rows=rows),
        mesh)

  main = jax.process_index() == 0
  clock = TrainClock(workdir, save_every=config.checkpoint_every_steps,
                     steps_per_epoch=steps_per_epoch, write=main)
  result = loop.fit(
      state, train_step, batches_for_epoch, num_epochs=config.num_epochs,
      steps_per_epoch=steps_per_epoch, workdir=workdir,
      checkpoint_every_steps=config.checkpoint_every_steps,
      keep_checkpoints=config.keep_checkpoints, on_step=clock.on_step,
      log_every_steps=config.log_every_steps, progress=config.progress and main,
      images_per_batch=config.batch_size)
  clock.finish(result.steps, result.resumed_from)
  final = result.state
  variables = {"params": final.params, "batch_stats": final.batch_stats}
  return Trained(model=model, variables=variables, train_seconds=clock.total(),
                 steps=int(result.steps))


def local_copy(trained: Trained) -> Trained:
  """``trained`` with its (replicated) variables on this process's first device only.

  A multi-process run's variables span every process's devices; a computation on them would
  need every process. The local copy lets one process evaluate alone.
  """
  import jax

  variables = jax.tree.map(lambda a: a.addressable_shards[0].data, trained.variables)
  return dataclasses.replace(trained, variables=variables)


class TrainClock:
  """Training wall time summed over resumed runs (``train_seconds.json`` in the workdir).

  The time is saved at every step where ``drojax.loop.fit`` checkpoints, keyed by the step, so
  a run resumed from checkpoint step ``s`` adds its own time to the time it had at ``s``
  (time spent after the last checkpoint of a killed run is lost, like its steps).
  """

  FILE = "train_seconds.json"

  def __init__(self, workdir: str, *, save_every: int, steps_per_epoch: int,
               write: bool = True):
    import os
    import time

    self._path = os.path.join(workdir, self.FILE)
    self._save_every = save_every
    self._steps_per_epoch = steps_per_epoch
    self._writes = write  # False on processes other than 0 (one writer per workdir)
    self._table = self._read()
    self._start = time.perf_counter()
    self._prior = None
    self._now = 0.0

  def _read(self) -> dict[int, float]:
    import json

    try:
      with open(self._path) as f:
        return {int(k): float(v) for k, v in json.load(f).items()}
    except (OSError, ValueError):
      return {}

  def _write(self) -> None:
    import json
    import os

    if not self._writes:
      return
    keep = dict(sorted(self._table.items())[-20:])
    tmp = self._path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({str(k): v for k, v in keep.items()}, f)
    os.replace(tmp, self._path)

  def _prior_seconds(self, first_step: int) -> float:
    earlier = [s for s in self._table if s <= first_step - 1]
    return self._table[max(earlier)] if earlier else 0.0

  def on_step(self, step: int, metrics) -> None:
    import time

    del metrics
    if self._prior is None:
      self._prior = self._prior_seconds(step)
    self._now = self._prior + time.perf_counter() - self._start
    if step % self._save_every == 0 or step % self._steps_per_epoch == 0:
      self._table[step] = self._now
      self._write()

  def finish(self, steps: int, resumed_from: int | None) -> None:
    if self._prior is None:  # nothing trained in this call (the run had already finished)
      self._now = self._table.get(steps, self._prior_seconds(steps + 1))
    self._table[steps] = self._now
    self._write()

  def total(self) -> float:
    return float(self._now)


def _table(config: ml_collections.ConfigDict) -> str:
  if config.eval.corruptions == "refined":
    return "refined_cifar100" if config.dataset == "cifar100" else "refined"
  return "standard"


def _published_loader(config: ml_collections.ConfigDict, data_dir: str | None):
  from experiments import cli

  if config.dataset not in ("cifar10", "cifar100"):
    raise cli.UsageError(f"--eval_corruptions=published needs cifar10 or cifar100 (the published "
                         f"CIFAR-C arrays), not {config.dataset}; use generated or refined")
  from drojax.data import published_c

  return published_c.make_loader(config.dataset, folder=config.eval.published_dir or None,
                                 data_dir=data_dir)


def bound_model(trained: Trained):
  """The trained model in eval mode as a ``drojax.evaluate.BoundModel``; its convolutions are
  ``drojax.models.conv``'s (same numbers), whose input gradients the attacks' loops need fast."""
  from drojax import evaluate as ev

  model = trained.model.clone(fast_input_grad=True)
  return ev.BoundModel(lambda v, x: model.apply(v, x, train=False), trained.variables)


def evaluate(config: ml_collections.ConfigDict, trained: Trained, test_ds, *, train_ds=None,
             data_dir: str | None = None) -> dict[str, Any]:
  """Clean / corrupted / adversarial (/ group) accuracy of a trained run on ``test_ds``."""
  from drojax import evaluate as ev

  bound = bound_model(trained)
  names = tuple(config.eval.corruption_names)
  if names == ("none",):
    corruptions, names_arg, loader = None, None, None
  else:
    corruptions = "published" if config.eval.corruptions == "published" else "generated"
    names_arg = names or None
    loader = _published_loader(config, data_dir) if corruptions == "published" else None
  groups = test_ds.groups if config.eval.groups else None
  train_groups = train_ds.groups if (config.eval.groups and train_ds is not None) else None
  attack = config.eval.get("attack", "pgd")
  eval_config = ev.EvalConfig(
      corruptions=corruptions, table=_table(config), corruption_names=names_arg,
      severities=tuple(config.eval.severities), eps=tuple(config.eval.adv_eps), attack=attack,
      norm=config.eval.get("norm", "linf"),
      num_steps=config.eval.pgd_steps if attack == "pgd" else config.eval.get("apgd_steps", 100),
      restarts=config.eval.pgd_restarts, num_queries=config.eval.get("square_queries", 5000),
      batch_size=config.eval.batch_size, frost_dir=config.eval.get("frost_dir") or None)
  return ev.evaluate(bound, test_ds.images, test_ds.labels, config=eval_config, groups=groups,
                     train_groups=train_groups, published_loader=loader,
                     progress=config.progress)


def write(workdir: str, results: dict[str, Any]) -> dict[str, str]:
  from experiments import reporting as results_lib

  return results_lib.write_results(workdir, results)


def compare(workdirs, out: str) -> dict[str, str]:
  from experiments import reporting as results_lib

  return results_lib.compare_runs(list(workdirs), out)

