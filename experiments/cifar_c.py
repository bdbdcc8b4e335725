r"""Train one method on CIFAR-10/100 (or digits, Fashion-MNIST, an .npz) and evaluate it on
clean, corrupted (CIFAR-C) and adversarial (PGD) inputs.

  python -m experiments.cifar_c --method=dro_augmix --preset=quick --dataset=digits \
      --workdir=runs/quick_dro_augmix
  python -m experiments.cifar_c --method=dro_augmix --dataset=cifar10 --data_dir=DIR \
      --workdir=runs/c10_dro_augmix --config.method_config.rho=1.0

Writes ``config.json``, ``metrics.jsonl``, checkpoints, ``results.json/csv/md`` and PNG plots to
``--workdir``; re-running with the same workdir resumes. Bad flags exit with status 2.
"""

from __future__ import annotations

from absl import flags

from experiments import cli
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "dro_augmix", "Training method (see drojax.methods.method_names()).")
flags.DEFINE_string("dataset", "cifar10",
                    "cifar10 | cifar100 | digits | fashion_mnist | npz:PATH")
flags.DEFINE_string("preset", "paper", "paper (the DRO-Augment recipe) | quick (CPU-sized).")
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, results).")
flags.DEFINE_string("eval_corruptions", None,
                    "published (CIFAR-10-C arrays) | generated (on the fly, standard table) | "
                    "refined (on the fly, refined table). Default: the config's.")
flags.DEFINE_string("data_dir", None, "Where to look for data first (default $DROJAX_DATA_DIR).")
flags.DEFINE_bool("download", False, "Download CIFAR archives (checksummed) if not found.")
flags.DEFINE_string("compilation_cache_dir", None,
                    "JAX persistent compilation cache (default ~/.cache/drojax/jax; 'none' off).")


def build_config(overrides):
  """The config from the flags and the ``--config.*`` overrides (validated)."""
  from drojax.data.registry import validate_name

  cli.check_choice(FLAGS.preset, common.PRESETS, "--preset")
  if FLAGS.eval_corruptions is not None:
    cli.check_choice(FLAGS.eval_corruptions, common.EVAL_CORRUPTIONS, "--eval_corruptions")
  try:
    validate_name(FLAGS.dataset)
  except ValueError as e:
    raise cli.UsageError(f"--dataset: {e}") from None
  config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset,
                                      eval_corruptions=FLAGS.eval_corruptions)
  cli.apply_overrides(config, overrides)
  cifar_c_config.validate(config)  # every field, before anything is written or compiled
  return config


def main(argv, overrides):
  del argv
  from experiments import runner

  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  config = build_config(overrides)
  runner.run(config, FLAGS.workdir, data_dir=FLAGS.data_dir, download=FLAGS.download,
             compilation_cache_dir=FLAGS.compilation_cache_dir)


if __name__ == "__main__":
  cli.run_main(main)
