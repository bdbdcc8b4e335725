"""The config of ``experiments.fashion_mnist_pgd``: images resized to 32x32 and repeated to 3
channels; L-inf PGD, 20 steps, random start, at eps 4/255, 8/255, 16/255 with steps 0.5/255,
1/255, 2/255 (recipes.md), in pixel space [0, 1] (the reference attacked normalised inputs)."""

from __future__ import annotations

import ml_collections

from experiments.configs import common

EVAL = {"eval.corruption_names": ("none",),  # clean + PGD only
        "eval.adv_eps": (4 / 255, 8 / 255, 16 / 255)}
RECIPE = {"num_epochs": 50, "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.9,
          "nesterov": False, "weight_decay": 0.0, "method_config.rho": 0.08,
          # Adversarial training (pgd_at, trades, mart): eps 0.1 as the common Fashion-MNIST
          # setting, above the evaluated radii; step eps/4 for 10 steps.
          "method_config.adv_eps": 0.1, "method_config.adv_step_size": 0.025,
          "method_config.adv_steps": 10, **EVAL, "eval.pgd_steps": 20}
QUICK = {**EVAL, "learning_rate": 2e-3, "eval.pgd_steps": 5, "train_subset": 2000}


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "fashion_mnist") -> ml_collections.ConfigDict:
  return common.make_config("fashion_mnist_pgd", method, preset=preset, dataset=dataset,
                            recipe=RECIPE, quick=QUICK)


get_config = common.get_config_of(make_config)
