r"""Fashion-MNIST under L-inf PGD (DRO-Augment's adversarial experiment), several methods.

  python -m experiments.fashion_mnist_pgd --methods=erm,dro,mixup,dro_mixup \
      --data_dir=../shared/data --workdir=runs/fmnist_pgd

PGD: 20 steps, random start, eps 4/255, 8/255, 16/255 (step eps/8), in pixel space [0, 1].
Each method trains into ``WORKDIR/<method>``; ``WORKDIR/comparison.md`` and ``.png`` compare
them. Data: ``fashion_mnist_{train,test}.npz`` or the idx files in ``--data_dir`` (or
``$DROJAX_DATA_DIR``), or the Debian package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

from absl import flags

from experiments import cli, multi
from experiments.configs import fashion_mnist_pgd as fm_config

FLAGS = flags.FLAGS

main, help_config = multi.methods_cli(
    lambda m: fm_config.make_config(m, preset=FLAGS.preset, dataset=FLAGS.dataset),
    "methods", "preset", "dataset", "workdir", "data_dir", "compilation_cache_dir",
    dataset="fashion_mnist")


if __name__ == "__main__":
  cli.run_main(main, help_config=help_config)
