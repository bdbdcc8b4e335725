"""Fashion-MNIST under PGD: the DRO-Augment adversarial experiment.

Images resized to 32x32 and repeated to 3 channels; L-inf PGD, 20 steps, random start, at
eps 4/255, 8/255, 16/255 with steps 0.5/255, 1/255, 2/255 (recipes.md). We attack in pixel
space [0, 1] (the reference attacked normalised inputs). Run::

  python -m experiments.fashion_mnist_pgd --methods=erm,dro --data_dir=/work/shared/data \
      --workdir=runs/fmnist_pgd
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "fashion_mnist") -> ml_collections.ConfigDict:
  c = common.base_config(method=method, dataset=dataset, preset=preset)
  c.experiment = "fashion_mnist_pgd"
  c.num_epochs = 50
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 0.0
  c.method_config.rho = 0.08
  # Adversarial training (pgd_at, trades, mart): eps 0.1 as the common Fashion-MNIST setting,
  # above the evaluated radii; step eps/4 for 10 steps.
  c.method_config.adv_eps = 0.1
  c.method_config.adv_step_size = 0.025
  c.method_config.adv_steps = 10
  c.eval.corruption_names = ("none",)  # clean + PGD only
  c.eval.adv_eps = (4 / 255, 8 / 255, 16 / 255)
  c.eval.pgd_steps = 20
  if preset == "quick":
    common.apply_quick(c)
    c.eval.corruption_names = ("none",)
    c.learning_rate = 2e-3
    c.eval.adv_eps = (4 / 255, 8 / 255, 16 / 255)
    c.eval.pgd_steps = 5
    c.train_subset = 2000
  c.lock()
  return c


def get_config(arg: str = "erm") -> ml_collections.ConfigDict:
  parts = (arg or "erm").split(",")
  return make_config(parts[0], preset=parts[1] if len(parts) > 1 else "paper")
