"""Group accuracy (Waterbirds, Sagawa et al. 2020): accuracy per group, the worst group, and
the average of the group accuracies weighted by the *training* group proportions.

Works on predictions already made (:func:`drojax.evaluate.predict`), host-side NumPy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def group_accuracy(predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                   train_groups: np.ndarray | None = None) -> dict[str, Any]:
  """Per-group, worst-group and training-proportion-weighted average accuracy.

  .. math:: \\mathrm{avg} = \\sum_g \\frac{n^{train}_g}{n^{train}} \\mathrm{acc}_g, \\qquad
            \\mathrm{worst} = \\min_g \\mathrm{acc}_g

  over the groups present in the evaluation set. Without ``train_groups`` the weights are the
  evaluation set's own proportions (then ``average`` equals plain accuracy).

  Args:
    predictions: ``[N]`` predicted labels.
    labels: ``[N]`` true labels.
    groups: ``[N]`` integer group ids (Waterbirds: ``2 * y + place``).
    train_groups: group ids of the training examples (for the weights), or None.

  Returns:
    ``{"per_group": {g: acc}, "counts": {g: n}, "worst_group": acc, "worst_group_id": g,
    "average": acc, "weights": {g: w}, "weights_from": "train" | "eval"}`` (group keys are
    strings, as in JSON).

  Example:
    >>> r = group_accuracy(np.array([0, 1, 1, 1]), np.array([0, 1, 0, 1]),
    ...                    np.array([0, 0, 1, 1]), train_groups=np.array([0, 0, 0, 1]))
    >>> r["per_group"], r["worst_group"], r["average"]
    ({'0': 1.0, '1': 0.5}, 0.5, 0.875)
  """
  predictions, labels, groups = (np.asarray(a) for a in (predictions, labels, groups))
  if not (predictions.shape == labels.shape == groups.shape and predictions.ndim == 1):
    raise ValueError(f"predictions, labels and groups must all have shape [N]; got "
                     f"{predictions.shape}, {labels.shape}, {groups.shape}.")
  if not np.issubdtype(groups.dtype, np.integer):
    raise TypeError(f"groups must be integer ids; got dtype {groups.dtype}.")
  ids = sorted(int(g) for g in np.unique(groups))
  if not ids:
    raise ValueError("groups is empty: nothing to evaluate.")
  correct = predictions == labels
  per = {str(g): float(np.mean(correct[groups == g])) for g in ids}
  counts = {str(g): int(np.sum(groups == g)) for g in ids}
  if train_groups is not None:
    train_groups = np.asarray(train_groups)
    if train_groups.ndim != 1 or not np.issubdtype(train_groups.dtype, np.integer):
      raise ValueError(f"train_groups must be integer ids [M]; got shape {train_groups.shape} "
                       f"dtype {train_groups.dtype}.")
    w = np.array([np.sum(train_groups == g) for g in ids], np.float64)
    source = "train"
    if w.sum() == 0:
      raise ValueError(f"train_groups holds none of the evaluated groups {ids}.")
  else:
    w = np.array([counts[str(g)] for g in ids], np.float64)
    source = "eval"
  w = w / w.sum()
  worst = min(ids, key=lambda g: per[str(g)])
  return {
      "per_group": per,
      "counts": counts,
      "worst_group": per[str(worst)],
      "worst_group_id": worst,
      "average": float(sum(wi * per[str(g)] for wi, g in zip(w, ids))),
      "weights": {str(g): float(wi) for g, wi in zip(ids, w)},
      "weights_from": source,
  }


__all__ = ["group_accuracy"]
