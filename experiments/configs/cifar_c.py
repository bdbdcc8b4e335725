"""The config of ``experiments.cifar_c``: DRO-Augment's recipe (PreActResNet-18, 200 epochs, SGD
0.1 Nesterov, wd 5e-4, batch 128, cosine to 1e-6) and the quick preset;
``get_config("dro_augmix,quick,digits")`` is the README's quick-start config in Python."""

from __future__ import annotations

import ml_collections

from experiments.configs import common


def make_config(method: str, *, preset: str = "paper", dataset: str = "cifar10",
                eval_corruptions: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of ``method`` under ``preset`` on ``dataset``."""
  recipe = {"method_config.rho": 0.08} if dataset == "fashion_mnist" else {}  # recipes.md
  if eval_corruptions:
    recipe["eval.corruptions"] = eval_corruptions
  return common.make_config("cifar_c", method, preset=preset, dataset=dataset, recipe=recipe)


get_config = common.get_config_of(make_config)
