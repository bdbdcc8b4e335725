"""Waterbirds: ERM vs KL-DRO vs Var-DRO, worst-group and average accuracy.

Expects a Waterbirds-style folder (``metadata.csv`` with img_filename, y, place, split). The
group-DRO recipe (recipes.md) used ResNet-50 at 224 px, lr 1e-3, wd 1e-4, batch 128, 300 epochs;
we train PreActResNet-18 on ``image_size`` px images with the same optimiser settings. Run::

  python -m experiments.waterbirds --methods=erm,kl_dro,var_dro --data_dir=/path/waterbird \
      --workdir=runs/waterbirds
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common
from drojax.specs import Int


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "waterbirds") -> ml_collections.ConfigDict:
  c = common.base_config(method=method, dataset=dataset, preset=preset)
  c.experiment = "waterbirds"
  c.image_size = 64
  c.num_epochs = 300
  c.learning_rate = 1e-3
  c.weight_decay = 1e-4
  c.nesterov = False
  c.method_config.label_smoothing = 0.1 if method.startswith("var_dro") else 0.0
  c.method_config.var_dro_eps_max = 1.0
  c.eval.corruption_names = ("none",)
  c.eval.adv_eps = ()
  c.eval.groups = True
  if preset == "quick":
    common.apply_quick(c)
    c.eval.corruption_names = ("none",)
    c.image_size = 32
    c.eval.adv_eps = ()
  c.lock()
  return c


def get_config(arg: str = "erm") -> ml_collections.ConfigDict:
  parts = (arg or "erm").split(",")
  return make_config(parts[0], preset=parts[1] if len(parts) > 1 else "paper")


# The fields this experiment adds to ``common.base_config``, with their checks (the models
# downsample 8x before pooling).
EXTRA_FIELDS = {"image_size": Int(lo=8)}
