"""CIFAR-10/100-C: train one method, evaluate clean / corrupted / adversarial accuracy.

Run (the README's quick-start, offline, on the bundled digits)::

  python -m experiments.cifar_c --method=dro_augmix --preset=quick --dataset=digits \
      --workdir=runs/quick_dro_augmix

The paper recipe (DRO-Augment: PreActResNet-18, 200 epochs, SGD 0.1 Nesterov, wd 5e-4, batch
128, cosine to 1e-6)::

  python -m experiments.cifar_c --method=dro_augmix --preset=paper --dataset=cifar10 \
      --data_dir=/path/to/data --workdir=runs/c10_dro_augmix

``get_config("dro_augmix,quick,digits")`` builds the same config in Python.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import common

def make_config(method: str, *, preset: str = "paper", dataset: str = "cifar10",
                eval_corruptions: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of ``method`` under ``preset`` on ``dataset``."""
  c = common.base_config(method=method, dataset=dataset, preset=preset)
  c.experiment = "cifar_c"
  if dataset == "fashion_mnist":
    c.method_config.rho = 0.08  # recipes.md: Fashion-MNIST rho=0.08, q=1
  if preset == "quick":
    common.apply_quick(c)
  if eval_corruptions:
    c.eval.corruptions = eval_corruptions
  c.lock()
  return c


def get_config(arg: str = "erm") -> ml_collections.ConfigDict:
  """``arg`` = ``method[,preset[,dataset]]``, e.g. ``"dro_augmix,quick,digits"``."""
  parts = (arg or "erm").split(",")
  method = parts[0]
  preset = parts[1] if len(parts) > 1 else "paper"
  dataset = parts[2] if len(parts) > 2 else "cifar10"
  return make_config(method, preset=preset, dataset=dataset)
