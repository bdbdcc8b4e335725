"""The config of ``experiments.waterbirds``: the group-DRO recipe (recipes.md: ResNet-50 at 224
px, lr 1e-3, wd 1e-4, batch 128, 300 epochs) with PreActResNet-18 on ``image_size`` px images and
the same optimiser settings."""

from __future__ import annotations

import ml_collections

from drojax.specs import Int
from experiments.configs import common

# The fields this experiment adds to ``common.base_config``: (default, check); the models
# downsample 8x before pooling.
EXTRA_FIELDS = {"image_size": (64, Int(lo=8))}
NO_CORRUPTION_OR_ATTACK = {"eval.corruption_names": ("none",), "eval.adv_eps": ()}


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "waterbirds") -> ml_collections.ConfigDict:
  recipe = {"num_epochs": 300, "learning_rate": 1e-3, "weight_decay": 1e-4, "nesterov": False,
            "method_config.label_smoothing": 0.1 if method.startswith("var_dro") else 0.0,
            "method_config.var_dro_eps_max": 1.0, **NO_CORRUPTION_OR_ATTACK,
            "eval.groups": True}
  return common.make_config("waterbirds", method, preset=preset, dataset=dataset,
                            recipe=recipe, quick={**NO_CORRUPTION_OR_ATTACK, "image_size": 32},
                            extra_fields=EXTRA_FIELDS)


get_config = common.get_config_of(make_config)
