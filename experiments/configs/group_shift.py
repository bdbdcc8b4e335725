"""Group shift: ERM, the DRO objectives and the group / environment methods on the offline
benchmarks of ``drojax.data.group_shift`` (worst-group and average accuracy). Run::

  python -m experiments.group_shift --benchmark=colored_digits --preset=quick \\
      --methods=erm,var_dro,group_dro,vrex,irm,var_dro_vrex --seeds=0,1,2 --workdir=runs/gs

Small images and a small CNN (``small_cnn``), Adam at 1e-3 as in Arjovsky et al.'s and Krueger
et al.'s Colored MNIST code, no corruption or attack evaluation, group accuracy on the test
split and on the validation split (model selection).
"""

from __future__ import annotations

import ml_collections

from drojax.specs import Bool
from experiments.configs import common

BENCHMARKS = ("colored_digits", "colored_fashion_mnist", "dominoes", "waterbirds")


def make_config(method: str, *, preset: str = "paper",
                dataset: str = "colored_digits") -> ml_collections.ConfigDict:
  c = common.base_config(method=method, dataset=dataset, preset=preset)
  c.experiment = "group_shift"
  c.model = "small_cnn"
  c.width = 16
  c.num_epochs = 30
  c.batch_size = 128
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.weight_decay = 0.0
  c.nesterov = False
  c.lr_schedule = "constant"
  c.eval.corruption_names = ("none",)
  c.eval.adv_eps = ()
  c.eval.groups = True
  c.eval.images = 0
  c.eval.batch_size = 500
  c.checkpoint_every_steps = 200
  c.log_every_steps = 20
  # Var-DRO only: per-epoch tracked variance and weights by group / flipped label (+ plot).
  c.var_dro_diagnostics = False
  if preset == "quick":
    c.width = 8
    c.num_epochs = 8
    c.batch_size = 64
  c.lock()
  return c


def get_config(arg: str = "erm") -> ml_collections.ConfigDict:
  parts = (arg or "erm").split(",")
  return make_config(parts[0], preset=parts[1] if len(parts) > 1 else "paper",
                     **({"dataset": parts[2]} if len(parts) > 2 else {}))


# The fields this experiment adds to ``common.base_config``, with their checks.
EXTRA_FIELDS = {"var_dro_diagnostics": Bool()}
