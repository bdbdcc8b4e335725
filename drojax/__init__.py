"""drojax: distributionally robust training of image classifiers in JAX.

Submodules are imported lazily, so ``import drojax.losses`` or ``import drojax.weighting``
pulls in JAX only (no Flax, Optax, Orbax or TensorFlow Datasets).

Images are NHWC float32 in [0, 1] everywhere inside the library.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "attacks",
    "augment",
    "checkpoint",
    "corruptions",
    "data",
    "distributed",
    "evaluate",
    "groups",
    "loop",
    "losses",
    "methods",
    "models",
    "objectives",
    "train",
    "views",
    "wdro",
    "weighting",
)

__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"drojax.{name}")
  raise AttributeError(f"module 'drojax' has no attribute {name!r}")


def __dir__():
  return sorted(__all__)
