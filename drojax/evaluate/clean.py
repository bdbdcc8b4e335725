"""Clean accuracy: predictions over a dataset, batch by batch.

Images are NHWC uint8 (divided by 255) or float in [0, 1]; a model is a ``logits_fn`` or a
:class:`~drojax.evaluate.BoundModel` (see :mod:`drojax.evaluate.batching`).
"""

from __future__ import annotations

import math

import numpy as np

from drojax import _checks
from drojax.evaluate.batching import (Model, batches, check_arrays, float_batch, predictor,
                                      progress_bar)
from drojax.evaluate.share import ALONE, Share


def predict(model: Model, images: np.ndarray, *, batch_size: int = 256, progress: bool = True,
            desc: str = "predict", share: Share = ALONE) -> np.ndarray:
  """Predicted labels ``[N]`` (argmax of the logits), batch by batch.

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    batch_size: rows per call (the last batch is padded).
    progress: show a progress bar.
    desc: the progress bar's label.
    share: this process's batches (:mod:`drojax.evaluate.share`); every process gets all
      ``N`` predictions.

  Returns:
    ``[N]`` int labels.

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([x.mean((1, 2, 3)), 0.5 - x.mean((1, 2, 3))], -1)
    >>> predict(f, np.array([0, 255], np.uint8).reshape(2, 1, 1, 1), progress=False).tolist()
    [1, 0]
  """
  images, _ = check_arrays(images, None, "predict")
  batch_size = _checks.check_static_int("batch_size", batch_size, minimum=1)
  pred = predictor(model)
  n = images.shape[0]
  out = np.zeros((n,), np.int64)  # rows of other processes' batches stay 0 here
  bs = min(batch_size, max(n, 1))
  spans = batches(n, bs)
  mine = share.mine(len(spans))
  with progress_bar(len(mine), desc, progress) as bar:
    for b in mine:
      s, e = spans[b]
      out[s:e] = pred(float_batch(images, s, e, bs))[: e - s]
      bar.update(1)
  return share.total(out)  # each row is filled by one process


def clean_accuracy(model: Model, images: np.ndarray, labels: np.ndarray, *,
                   batch_size: int = 256, progress: bool = True,
                   share: Share = ALONE) -> float:
  """Top-1 accuracy on unmodified images.

  .. math:: \\mathrm{acc} = \\frac{1}{N} \\sum_i [\\arg\\max_k f(x_i)_k = y_i]

  Args:
    model: ``logits_fn(x) -> [B, K]`` or a :class:`BoundModel`.
    images: ``[N, H, W, C]`` uint8 or float in [0, 1].
    labels: ``[N]`` integer labels.
    batch_size: rows per call.
    progress: show a progress bar.
    share: this process's batches (:mod:`drojax.evaluate.share`).

  Returns:
    Accuracy in [0, 1].

  Example:
    >>> import numpy as np, jax.numpy as jnp
    >>> f = lambda x: jnp.stack([x.mean((1, 2, 3)), 0.5 - x.mean((1, 2, 3))], -1)
    >>> x = np.array([0, 255, 255], np.uint8).reshape(3, 1, 1, 1)
    >>> clean_accuracy(f, x, np.array([1, 0, 1]), progress=False)
    0.6666666666666666
  """
  images, labels = check_arrays(images, labels, "clean_accuracy", model)
  pred = predict(model, images, batch_size=batch_size, progress=progress, desc="clean",
                 share=share)
  return float(np.mean(pred == labels)) if len(labels) else math.nan


__all__ = ["predict", "clean_accuracy"]
