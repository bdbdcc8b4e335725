"""The train-and-evaluate flow shared by the experiment CLIs.

``run(config, workdir)``: validate the config, prepare the workdir (``config.json``; a re-run
with the same config resumes, another config is refused), load the data, train with
``drojax.loop.fit`` (progress bar, ``metrics.jsonl``, orbax checkpoints, NaN guard), evaluate
(clean, corruptions x severities, PGD, groups) with ``drojax.evaluate`` and write
``results.json/csv/md`` and the plots with ``experiments.reporting.write_results``.

Several processes (``DROJAX_DISTRIBUTED=1``, docs/distributed.md) run the same ``run``: all
train together on the mesh over every process's devices; process 0 alone writes the workdir's
files and evaluates, the others wait for its ``results.json`` at a barrier.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections

from experiments import cli
from experiments import summary
from experiments.configs import common
from drojax.specs import ConfigError

DATA_DIR_ENV = "DROJAX_DATA_DIR"


# ------------------------------------------------------------------------------- validation

def _config_module(config: ml_collections.ConfigDict):
  from experiments.configs import cifar_c, fashion_mnist_pgd, waterbirds

  modules = {"cifar_c": cifar_c, "fashion_mnist_pgd": fashion_mnist_pgd,
             "waterbirds": waterbirds}
  return modules.get(config.get("experiment"))


def validate(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
  """Checks the whole config before anything is written or compiled; raises ``cli.UsageError``.

  Every field against its spec, the cross-field rules and the method's factory
  (``experiments.configs.common.validate``, with the experiment's own fields), then what needs
  the machine: the batch against the devices and the frost photographs named by
  ``eval.frost_dir``.
  """
  module = _config_module(config)
  try:
    common.validate(config, getattr(module, "EXTRA_FIELDS", None))
  except ConfigError as e:
    raise cli.config_usage_error(e) from None
  if config.batch_size % num_devices:
    raise cli.UsageError(
        f"--config.batch_size={config.batch_size} is not divisible by the {num_devices} "
        f"devices; use a multiple of {num_devices} (e.g. --config.batch_size="
        f"{max(num_devices, config.batch_size // num_devices * num_devices)})")
  frost_dir = config.eval.get("frost_dir", "")
  if frost_dir:
    if config.eval.corruptions == "published":
      raise cli.UsageError("eval.frost_dir applies to generated corruptions (eval.corruptions="
                           "generated or refined), not published")
    from drojax.corruptions import textures

    try:
      textures.load_frost_textures(frost_dir)  # a few photographs: read them before training
    except (ValueError, OSError) as e:
      raise cli.UsageError(f"eval.frost_dir: {e}") from None


def check_data(config: ml_collections.ConfigDict, train_ds, test_ds, *,
               data_dir: str | None) -> None:
  """The checks that need the loaded data (or other files); run before ``config.json``."""
  if len(train_ds) < config.batch_size:
    raise cli.UsageError(f"--config.batch_size={config.batch_size} is larger than the "
                         f"{len(train_ds)} training examples of {config.dataset}")
  names = tuple(config.eval.corruption_names)
  if config.eval.corruptions == "published" and names != ("none",):
    from experiments import engine

    engine._published_loader(config, data_dir)  # DataNotFoundError before training, not after


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


# ------------------------------------------------------------------------------- run

# How long processes other than 0 wait for process 0's evaluation (corruptions and attacks on
# a large test set take hours on a slow device; a crashed process 0 ends the wait sooner,
# through JAX's heartbeat).
EVAL_WAIT_S = 24 * 3600


def run(config: ml_collections.ConfigDict, workdir: str, *, data_dir: str | None = None,
        download: bool = False, compilation_cache_dir: str | None = None,
        extra_evaluation: Callable[[Any, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
  """Validates, trains (resuming), evaluates and writes the results of one run.

  Args:
    extra_evaluation: ``f(trained, test_ds) -> dict`` run after the configured evaluation; its
      keys are added to ``results.json`` (e.g. accuracy on pre-made corrupted test sets).

  Returns:
    The results dict written to ``results.json``.
  """
  import jax

  with config.unlocked():
    if data_dir:
      config.data_dir = data_dir
    if download:
      config.download = True
    if compilation_cache_dir is not None:
      config.compilation_cache_dir = compilation_cache_dir
  if jax.process_count() > 1:  # first: a device count that differs would mislead validate
    agree(config, workdir)
  validate(config, num_devices=jax.device_count())
  main = jax.process_index() == 0
  # Nothing is written before the config and the data have passed every check: a failed start
  # leaves no config.json behind to refuse the corrected command.
  if cli.check_workdir(workdir, config) and os.path.isfile(
      os.path.join(workdir, "results.json")):
    if main:
      print(f"{workdir} already holds the finished run (results.json); nothing to do",
            flush=True)
      summary.print_summary(read_results(workdir), workdir)
    return read_results(workdir)
  data_dir = resolve_data_dir(None, config)
  train_ds, test_ds = load_data(config, data_dir=data_dir, download=config.download)
  check_data(config, train_ds, test_ds, data_dir=data_dir)
  resumed = cli.prepare_workdir(workdir, config, write=main)
  cli.enable_compilation_cache(config.compilation_cache_dir)
  if main:
    print(f"{config.experiment}: method={config.method} dataset={config.dataset} "
          f"train={len(train_ds)} test={len(test_ds)} image={train_ds.image_shape} "
          f"devices={jax.device_count()} processes={jax.process_count()} workdir={workdir}"
          + (" (resuming)" if resumed else ""), flush=True)
  from drojax import train as train_lib
  from experiments import engine

  trained = engine.train(config, workdir, train_ds, mesh=train_lib.make_mesh())
  if jax.process_count() > 1:
    # Evaluation runs on process 0 alone (on its first device, as a single-process run does),
    # the others wait for its results.json: drojax.evaluate's jitted functions never see a
    # cross-process array, so nothing there needs to know about several processes.
    trained = engine.local_copy(trained)
    if main:
      results = _evaluate_and_write(config, workdir, trained, train_ds, test_ds, data_dir,
                                    extra_evaluation)
    from orbax.checkpoint import multihost

    multihost.sync_global_processes(f"drojax_evaluated:{os.path.abspath(workdir)}",
                                    timeout=EVAL_WAIT_S)
    return results if main else read_results(workdir)
  return _evaluate_and_write(config, workdir, trained, train_ds, test_ds, data_dir,
                             extra_evaluation)


def agree(config: ml_collections.ConfigDict, workdir: str) -> None:
  """The processes of a multi-process run agree on the config (all but ``cli.RUN_ONLY_FIELDS``,
  which may differ per host), the workdir and their device counts (``drojax.distributed.agree``);
  a disagreement is a ``cli.UsageError`` naming what differs, raised on every process."""
  from drojax import distributed

  shared = {k: v for k, v in cli.config_to_dict(config).items() if k not in cli.RUN_ONLY_FIELDS}
  try:
    distributed.agree(shared, workdir, timeout_s=cli.DISTRIBUTED_TIMEOUT_S)
  except distributed.Disagreement as e:
    raise cli.UsageError(str(e)) from None


def _evaluate_and_write(config, workdir, trained, train_ds, test_ds, data_dir,
                        extra_evaluation) -> dict[str, Any]:
  from experiments import engine

  results = engine.evaluate(config, trained, test_ds, train_ds=train_ds, data_dir=data_dir)
  if extra_evaluation is not None:
    results.update(extra_evaluation(trained, test_ds))
  results.update({
      "experiment": config.experiment,
      "method": config.method,
      "dataset": config.dataset,
      "preset": config.preset,
      "train_seconds": trained.train_seconds,
      "steps": trained.steps,
      "num_train": len(train_ds),
      "num_test": len(test_ds),
  })
  engine.write(workdir, results)
  summary.print_summary(results, workdir)
  return results


def read_results(workdir: str) -> dict[str, Any]:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


__all__ = ["validate", "load_data", "resolve_data_dir", "run", "read_results", "DATA_DIR_ENV",
           "EVAL_WAIT_S"]
