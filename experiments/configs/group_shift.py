"""The config of ``experiments.group_shift`` on the offline benchmarks of
``drojax.data.group_shift``: a small CNN (``small_cnn``), Adam at 1e-3 as in Arjovsky et al.'s and
Krueger et al.'s Colored MNIST code, no corruption or attack evaluation, group accuracy on the
test split and on the validation split (model selection)."""

from __future__ import annotations

import ml_collections

from drojax.specs import Bool
from experiments.configs import common

BENCHMARKS = ("colored_digits", "colored_fashion_mnist", "dominoes", "waterbirds")
# Var-DRO only: per-epoch tracked variance and weights by group / flipped label (+ plot).
EXTRA_FIELDS = {"var_dro_diagnostics": (False, Bool())}
RECIPE = {"model": "small_cnn", "width": 16, "num_epochs": 30, "batch_size": 128,
          "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "nesterov": False,
          "lr_schedule": "constant", "eval.corruption_names": ("none",), "eval.adv_eps": (),
          "eval.groups": True, "eval.images": 0, "eval.batch_size": 500,
          "checkpoint_every_steps": 200, "log_every_steps": 20}
# The quick preset only shrinks the recipe (the papers' Adam at 1e-3 stays; not
# common.apply_quick's CPU recipe).
QUICK = {"width": 8, "num_epochs": 8, "batch_size": 64}


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "colored_digits") -> ml_collections.ConfigDict:
  c = common.make_config("group_shift", method, preset="paper", dataset=dataset,
                         recipe={**RECIPE, **(QUICK if preset == "quick" else {})},
                         extra_fields=EXTRA_FIELDS)
  with c.unlocked():
    c.preset = preset
  return c


get_config = common.get_config_of(make_config)
