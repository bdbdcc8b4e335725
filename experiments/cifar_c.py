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

from experiments import cli, flag_defs
from experiments.configs import common
from experiments.configs import cifar_c as cifar_c_config
from experiments.overrides import apply_overrides

FLAGS = flags.FLAGS


def build_config(overrides):
  """The config from the flags and the ``--config.*`` overrides."""
  flag_defs.check_run_flags()
  if FLAGS.eval_corruptions is not None:
    flag_defs.check_choice(FLAGS.eval_corruptions, common.EVAL_CORRUPTIONS, "--eval_corruptions")
  config = cifar_c_config.make_config(FLAGS.method, preset=FLAGS.preset, dataset=FLAGS.dataset,
                                      eval_corruptions=FLAGS.eval_corruptions)
  return flag_defs.set_run_fields(apply_overrides(config, overrides))


@flag_defs.uses("method", "eval_corruptions", "dataset", "preset", "workdir", "data_dir",
                "download", "compilation_cache_dir")
def main(argv, overrides):
  del argv
  from experiments import train

  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  train.train_and_evaluate(build_config(overrides), FLAGS.workdir)


if __name__ == "__main__":
  cli.run_main(main, help_config=lambda: build_config([]))
