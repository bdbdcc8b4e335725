"""Image classifiers (Flax Linen) taking NHWC float images in [0, 1].

Every model normalizes its input internally, has the signature
``model.apply(variables, x, train=bool, mix=MixPlan | None)`` and exposes ``bn_axis_name`` for
synced BatchNorm across a device mesh. ``get_model(name, ...)`` builds one by name.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from drojax._checks import check_static_int
from drojax.models.preact_resnet import PreActBlock, PreActResNet18
from drojax.models.small_cnn import SmallCNN, TinyNet

_MODELS = {
    "preact_resnet18": PreActResNet18,
    "small_cnn": SmallCNN,
    "tiny": TinyNet,
}

__all__ = ["PreActBlock", "PreActResNet18", "SmallCNN", "TinyNet", "get_model", "model_names"]


def model_names() -> list[str]:
  """Names accepted by :func:`get_model`."""
  return sorted(_MODELS)


def get_model(name: str, *, num_classes: int, width: int | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              dtype: Any = jnp.float32, bn_axis_name: str | None = None,
              fast_input_grad: bool = False) -> nn.Module:
  """Builds a model by name.

  Args:
    name: one of :func:`model_names` (``preact_resnet18``, ``small_cnn``, ``tiny``).
    num_classes: number of logits.
    width: channel multiplier (each model's default when ``None``).
    mean, std: per-channel input normalization (length 1 or ``C``); model default when None.
    dtype: computation dtype (parameters stay float32).
    bn_axis_name: mesh axis for synced BatchNorm (the train step sets it itself).
    fast_input_grad: convolutions from ``drojax.models.conv`` (same values and derivatives;
      input gradients inside ``lax`` loops, i.e. attacks, run 4-10x faster on XLA:CPU).

  Example:
    >>> get_model("preact_resnet18", num_classes=10, width=16).width
    16
  """
  if name not in _MODELS:
    close = difflib.get_close_matches(name, _MODELS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}; expected one of {model_names()}.{hint}")
  check_static_int("num_classes", num_classes, minimum=1)
  if not isinstance(fast_input_grad, bool):
    raise ValueError(f"fast_input_grad must be a bool, got {fast_input_grad!r}")
  kwargs: dict[str, Any] = dict(num_classes=num_classes, dtype=dtype, bn_axis_name=bn_axis_name,
                                fast_input_grad=fast_input_grad)
  if width is not None:
    if not isinstance(width, int) or width < 1:
      raise ValueError(f"width must be a positive int, got {width!r}")
    kwargs["width"] = width
  if mean is not None:
    kwargs["mean"] = tuple(float(m) for m in mean)
  if std is not None:
    kwargs["std"] = tuple(float(s) for s in std)
  return _MODELS[name](**kwargs)
