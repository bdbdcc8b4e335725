"""``train_and_evaluate(config, workdir)``: one run of an experiment, flax-examples style
(the steps: docs/architecture.md, "Layers"; several processes: docs/distributed.md, where
each evaluates a share and process 0 alone writes).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import ml_collections

from drojax.specs import ConfigError
from experiments import cli, launch
from experiments.overrides import config_usage_error
from experiments import workdir as workdir_lib
from experiments.configs import common

DATA_DIR_ENV = "DROJAX_DATA_DIR"
# How long processes wait for each other after the evaluation, while process 0 writes the
# results (a crashed process ends the wait sooner, through JAX's heartbeat).
EVAL_WAIT_S = 24 * 3600


@dataclasses.dataclass
class Trained:
  """What evaluation needs from a finished (or resumed-and-finished) training run."""

  model: Any  # the Flax module
  variables: Any  # {'params': ..., 'batch_stats': ...} for model.apply in eval mode
  train_seconds: float  # wall time spent training, summed over resumed runs
  steps: int  # optimizer steps taken


# ------------------------------------------------------------------------------- validation

def validate(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
  """Checks the whole config before anything is written or compiled (``common.validate``),
  then the batch against the devices and ``eval.frost_dir``'s photographs; ``cli.UsageError``."""
  try:
    common.validate(config)
  except ConfigError as e:
    raise config_usage_error(e) from None
  if config.batch_size % num_devices:
    raise cli.UsageError(
        f"--config.batch_size={config.batch_size} is not divisible by the {num_devices} "
        f"devices; use a multiple of {num_devices} (e.g. --config.batch_size="
        f"{max(num_devices, config.batch_size // num_devices * num_devices)})")
  if config.eval.frost_dir:
    from drojax.corruptions import textures

    try:  # a few photographs: read them before training
      textures.load_frost_textures(config.eval.frost_dir)
    except (ValueError, OSError) as e:
      raise cli.UsageError(f"eval.frost_dir: {e}") from None


def check_data(config: ml_collections.ConfigDict, train_ds, test_ds, *,
               data_dir: str | None) -> None:
  """The checks that need the loaded data (or other files); run before ``config.json``: among
  them every requirement of the final evaluation (``check_evaluation``)."""
  from experiments import groups

  groups.check(config.method, common.method_config(config), train_ds)
  if config.get("var_dro_diagnostics", False):
    from experiments import var_dro_diagnostics

    if not var_dro_diagnostics.applies(config.method):
      raise cli.UsageError(f"--config.var_dro_diagnostics=true needs a Var-DRO method "
                           f"({', '.join(var_dro_diagnostics.OBJECTIVES)}), got "
                           f"--method={config.method}")
  if len(train_ds) < config.batch_size:
    raise cli.UsageError(f"--config.batch_size={config.batch_size} is larger than the "
                         f"{len(train_ds)} training examples of {config.dataset}")
  check_evaluation(config, num_classes=train_ds.num_classes, image_shape=test_ds.image_shape,
                   data_dir=data_dir)


def check_evaluation(config: ml_collections.ConfigDict, *, num_classes: int,
                     image_shape: Sequence[int], data_dir: str | None) -> None:
  """``cli.UsageError`` (or ``DataNotFoundError``) for what the final evaluation cannot do, so
  that hours of training are not wasted (issue 25): ``eval.attack=suite`` with budgets, the
  suite's own option check with the dataset's ``num_classes`` (APGD-T needs K >= 4);
  ``eval.corruptions=published``, every named file present, readable, complete and of the test
  images' ``[H, W, C]`` ``image_shape``; ``data_dir``: the resolved data directory."""
  from drojax import attacks
  from drojax.evaluate import adversarial

  k = int(num_classes)
  if len(config.eval.adv_eps) and config.eval.attack == "suite":
    try:
      attacks.check_suite_options(
          eps=None, norm=config.eval.norm, num_steps=config.eval.apgd_steps,
          num_targets=max(1, min(9, k - 1)), num_queries=config.eval.square_queries,
          p_init=adversarial.SQUARE_P_INIT, num_classes=k)
    except ValueError as e:
      raise cli.UsageError(f"--config.eval.attack=suite cannot evaluate {config.dataset} ({k} "
                           f"classes): {e} Use --config.eval.attack=apgd (or pgd).") from None
  names = tuple(config.eval.corruption_names)
  if config.eval.corruptions == "published" and names != ("none",):
    from drojax import corruptions
    from drojax.data import published_c

    try:
      published_c.make_loader(config.dataset, folder=config.eval.published_dir or None,
                              data_dir=data_dir, names=names or corruptions.NAMES,
                              image_shape=tuple(image_shape))
    except ValueError as e:
      raise cli.UsageError(f"eval.corruptions=published: {e}") from None


# ------------------------------------------------------------------------------- data

def resolve_data_dir(data_dir: str | None, config: ml_collections.ConfigDict) -> str | None:
  """The flag, then the config field, then ``$DROJAX_DATA_DIR``."""
  return data_dir or config.data_dir or os.environ.get(DATA_DIR_ENV) or None


def load_data(config: ml_collections.ConfigDict, *, data_dir: str | None, download: bool):
  """Train and test ``ArrayDataset``s (subsets as configured), checked against each other."""
  from drojax.data.registry import load_train_test

  size = config.image_size if config.dataset == "waterbirds" and "image_size" in config else None
  train, test = load_train_test(config.dataset, data_dir=data_dir, download=download,
                                image_size=size)
  train = train.subset(config.train_subset or None, seed=config.seed)
  test = test.subset(config.eval.images or None, seed=config.seed + 1)
  return train, test


# ------------------------------------------------------------------------------- training

def train(config: ml_collections.ConfigDict, workdir: str, train_ds, *, mesh,
          method=None) -> Trained:
  """Trains (or resumes, or finds finished) the run in ``workdir`` with ``drojax.loop.fit``.

  ``method``: the ``drojax.methods.Method`` to train (default: ``config.method``'s; JTT's two
  stages: ``experiments.groups.train_two_stage``). On several processes each calls this alike
  (``mesh`` spans their devices) and loads only its rows of every global batch.
  """
  import jax

  from drojax import data, loop, methods, models, train as train_lib
  from experiments import groups

  if method is None and methods.two_stage(config.method):
    return groups.train_two_stage(config, workdir, train_ds, mesh=mesh)
  model = models.get_model(config.model, num_classes=train_ds.num_classes, width=config.width)
  # Group-shift methods: counts from the data, environments = groups where there are none.
  method_cfg, train_ds = groups.prepare(config.method, common.method_config(config), train_ds)
  method = method or methods.get_method(config.method, method_cfg)
  steps_per_epoch = data.num_batches(len(train_ds), config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  schedule = dict(learning_rate=config.learning_rate, schedule=config.lr_schedule,
                  end_learning_rate=config.lr_min,
                  warmup_steps=config.warmup_epochs * total_steps // config.num_epochs)
  optimizer = train_lib.make_optimizer(
      total_steps, algorithm=config.optimizer, momentum=config.momentum,
      nesterov=config.nesterov, weight_decay=config.weight_decay, **schedule)
  # Replicated on the mesh from the start: the step's output state has this sharding, so the
  # second step reuses the first step's executable instead of compiling again.
  state = train_lib.create_train_state(
      jax.random.key(config.seed), model, optimizer, train_ds.image_shape, method=method,
      num_examples=int(train_ds.ids.max()) + 1, mesh=mesh)
  train_step = train_lib.make_train_step(
      method, model, mesh, optimizer=optimizer,
      learning_rate_fn=train_lib.make_learning_rate(total_steps, **schedule))
  rows = data.process_rows(mesh, config.batch_size)

  def batches_for_epoch(epoch: int, start_batch: int):
    # Shuffled gather of this process's rows in a background thread, placed on the mesh as
    # the global batch (the same global batch for any number of processes).
    return data.device_batches(
        data.epoch_batches(train_ds, batch_size=config.batch_size, seed=config.seed,
                           epoch=epoch, start_batch=start_batch, rows=rows),
        mesh)

  eval_fn = None
  if config.get("var_dro_diagnostics", False):
    from experiments import var_dro_diagnostics

    eval_fn = var_dro_diagnostics.make_eval_fn(config, workdir, train_ds, model, method_cfg,
                                               steps_per_epoch)
  result = loop.fit(
      state, train_step, batches_for_epoch, num_epochs=config.num_epochs,
      steps_per_epoch=steps_per_epoch, workdir=workdir,
      checkpoint_every_steps=config.checkpoint_every_steps,
      keep_checkpoints=config.keep_checkpoints, log_every_steps=config.log_every_steps,
      progress=config.progress and jax.process_index() == 0,
      images_per_batch=config.batch_size, eval_fn=eval_fn)
  variables = {"params": result.state.params, "batch_stats": result.state.batch_stats}
  return Trained(model=model, variables=variables, train_seconds=result.train_seconds,
                 steps=int(result.steps))


def bound_model(trained: Trained):
  """``trained`` in eval mode (``drojax.evaluate.bind``)."""
  from drojax import evaluate as ev

  return ev.bind(trained.model, trained.variables)


def evaluate(config: ml_collections.ConfigDict, trained: Trained, test_ds, *, train_ds,
             data_dir: str | None) -> dict[str, Any]:
  """Clean / corrupted / adversarial (/ group) accuracy of a trained run on ``test_ds``.

  In a multi-process run every process calls it and evaluates its share of every pass
  (``drojax.evaluate.share``); all get the whole test set's numbers. Only process 0 shows
  progress bars.
  """
  import jax

  from drojax import evaluate as ev
  from drojax.evaluate.share import this_process

  e = config.eval
  names = tuple(e.corruption_names)
  corruptions = None if names == ("none",) else (
      "published" if e.corruptions == "published" else "generated")
  loader = None  # validate refused published for a dataset without published CIFAR-C arrays
  if corruptions == "published":
    from drojax.data import published_c

    loader = published_c.make_loader(config.dataset, data_dir=data_dir,
                                     folder=e.published_dir or None)
  table = "standard"
  if e.corruptions == "refined":
    table = "refined_cifar100" if config.dataset == "cifar100" else "refined"
  eval_config = ev.EvalConfig(
      corruptions=corruptions, table=table, corruption_names=(names or None) if corruptions
      else None, severities=tuple(e.severities), eps=tuple(e.adv_eps), attack=e.attack,
      norm=e.norm, num_steps=e.pgd_steps if e.attack == "pgd" else e.apgd_steps,
      restarts=e.pgd_restarts, num_queries=e.square_queries, batch_size=e.batch_size,
      frost_dir=e.frost_dir or None)
  return ev.evaluate(bound_model(trained), test_ds.images, test_ds.labels, config=eval_config,
                     groups=test_ds.groups if e.groups else None,
                     train_groups=train_ds.groups if e.groups else None, published_loader=loader,
                     progress=config.progress and jax.process_index() == 0,
                     share=this_process())


# ------------------------------------------------------------------------------- the run

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       extra_evaluation: Callable[[Trained, Any], dict[str, Any]] | None = None
                       ) -> dict[str, Any]:
  """Validates, trains (resuming), evaluates and writes the results of one run; data and the
  compilation cache come from the config (``flag_defs.set_run_fields`` writes the CLI flags').

  Args:
    extra_evaluation: ``f(trained, test_ds) -> dict`` run after the configured evaluation; its
      keys are added to ``results.json`` (e.g. accuracy on pre-made corrupted test sets).

  Returns:
    The results dict written to ``results.json``.
  """
  import jax

  from drojax import distributed, train as train_lib
  from experiments import reporting

  if jax.process_count() > 1:  # first: a device count that differs would mislead validate
    # The processes agree on the config (but for the fields that may differ per host), the
    # workdir and their device counts; a disagreement is one line on every process.
    shared = {k: v for k, v in workdir_lib.config_to_dict(config).items()
              if k not in workdir_lib.RUN_ONLY_FIELDS}
    try:
      distributed.agree(shared, workdir, timeout_s=distributed.START_TIMEOUT_S)
    except distributed.Disagreement as e:
      raise cli.UsageError(str(e)) from None
  validate(config, num_devices=jax.device_count())
  main = jax.process_index() == 0
  # Nothing is written before the config and the data have passed every check: a failed start
  # leaves no config.json behind to refuse the corrected command.
  if workdir_lib.check_workdir(workdir, config) and os.path.isfile(
      os.path.join(workdir, "results.json")):
    results = reporting.read_results(workdir)
    if main:
      print(f"{workdir} already holds the finished run (results.json); nothing to do",
            flush=True)
      reporting.print_summary(results, workdir)
    return results
  data_dir = resolve_data_dir(None, config)
  train_ds, test_ds = load_data(config, data_dir=data_dir, download=config.download)
  check_data(config, train_ds, test_ds, data_dir=data_dir)
  resumed = workdir_lib.prepare_workdir(workdir, config, write=main)
  launch.enable_compilation_cache(config.compilation_cache_dir)
  if main:
    print(f"{config.experiment}: method={config.method} dataset={config.dataset} "
          f"train={len(train_ds)} test={len(test_ds)} image={train_ds.image_shape} "
          f"devices={jax.device_count()} processes={jax.process_count()} workdir={workdir}"
          + (" (resuming)" if resumed else ""), flush=True)
  trained = train(config, workdir, train_ds, mesh=train_lib.make_mesh())
  if jax.process_count() > 1:
    # Every process evaluates its share of the batches on its first device (a copy of the
    # variables there: the jitted evaluation never sees a cross-process array) and the counts
    # are summed over the processes (drojax.evaluate.share); process 0 writes the results.
    trained = dataclasses.replace(trained, variables=distributed.local_copy(trained.variables))
  results = evaluate(config, trained, test_ds, train_ds=train_ds, data_dir=data_dir)
  if extra_evaluation is not None:
    results.update(extra_evaluation(trained, test_ds))
  results.update(experiment=config.experiment, method=config.method, dataset=config.dataset,
                 preset=config.preset, train_seconds=trained.train_seconds, steps=trained.steps,
                 num_train=len(train_ds), num_test=len(test_ds))
  if config.get("var_dro_diagnostics", False):
    from experiments import var_dro_diagnostics

    results.update(var_dro_diagnostics.finish(config, workdir, train_ds))
  if main:  # one writer per workdir
    reporting.write_results(workdir, results)
    reporting.print_summary(results, workdir)
  if jax.process_count() > 1:
    from orbax.checkpoint import multihost

    multihost.sync_global_processes(f"drojax_evaluated:{os.path.abspath(workdir)}",
                                    timeout=EVAL_WAIT_S)
  return results

