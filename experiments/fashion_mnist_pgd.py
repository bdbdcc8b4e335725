r"""Fashion-MNIST under L-inf PGD (DRO-Augment's adversarial experiment), several methods.

  python -m experiments.fashion_mnist_pgd --methods=erm,dro,mixup,dro_mixup \
      --data_dir=/work/shared/data --workdir=runs/fmnist_pgd

PGD: 20 steps, random start, eps 4/255, 8/255, 16/255 (step eps/8), in pixel space [0, 1].
Each method trains into ``WORKDIR/<method>``; ``WORKDIR/comparison.md`` and ``.png`` compare
them. Data: ``fashion_mnist_{train,test}.npz`` or the idx files in ``--data_dir`` (or
``$DROJAX_DATA_DIR``), or the Debian package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, multi
from experiments.configs import common
from experiments.configs import fashion_mnist_pgd as fm_config

FLAGS = flags.FLAGS
flags.DEFINE_string("methods", "erm,dro", "Comma-separated methods to train and compare.")
flags.DEFINE_string("preset", "paper", "paper | quick")
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist | digits | npz:PATH")
flags.DEFINE_string("workdir", None, "Root directory; each method gets a sub-directory.")
flags.DEFINE_string("data_dir", None, "Where to look for data first (default $DROJAX_DATA_DIR).")
flags.DEFINE_string("compilation_cache_dir", None, "JAX compilation cache ('none' off).")


def build_configs(overrides):
  from drojax.data.registry import validate_name

  cli.check_choice(FLAGS.preset, common.PRESETS, "--preset")
  try:
    validate_name(FLAGS.dataset)
  except ValueError as e:
    raise cli.UsageError(f"--dataset: {e}") from None
  return multi.method_configs(
      FLAGS.methods,
      lambda m: fm_config.make_config(m, preset=FLAGS.preset, dataset=FLAGS.dataset), overrides)


def main(argv, overrides):
  del argv
  if not FLAGS.workdir:
    raise cli.UsageError("--workdir is required")
  multi.run_all(build_configs(overrides), FLAGS.workdir,
                run_kwargs=dict(data_dir=FLAGS.data_dir,
                                compilation_cache_dir=FLAGS.compilation_cache_dir))


if __name__ == "__main__":
  cli.run_main(main)
