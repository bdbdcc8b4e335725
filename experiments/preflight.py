"""What a run's final evaluation needs, checked before training (issue 25).

A run that trains for hours and then cannot evaluate (a suite on 3 classes, a truncated CIFAR-C
file) wastes the training, and its workdir then refuses the corrected config. ``check_evaluation``
is called by the validation step once the data is loaded, before ``config.json`` is written.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

from experiments import cli


def check_evaluation(config: ml_collections.ConfigDict, *, num_classes: int,
                     image_shape: Sequence[int], data_dir: str | None) -> None:
  """Raises ``cli.UsageError`` (or ``DataNotFoundError``) for what the evaluation cannot do.

  * ``eval.attack=suite`` with adversarial budgets: the suite's own option check with the
    dataset's ``num_classes`` (APGD-T needs K >= 4);
  * ``eval.corruptions=published``: every named corruption file present, readable, complete
    (not truncated, not empty) and of the test images' height and width.

  Args:
    config: the validated experiment config.
    num_classes: the dataset's K.
    image_shape: ``[H, W, C]`` of the test images.
    data_dir: the resolved data directory (tfds or the extracted archives).
  """
  from drojax import attacks
  from drojax.evaluate import adversarial

  k = int(num_classes)
  if len(config.eval.adv_eps) and config.eval.attack == "suite":
    try:
      attacks.check_suite_options(
          eps=None, norm="linf", num_steps=config.eval.apgd_steps,
          num_targets=max(1, min(9, k - 1)), num_queries=config.eval.square_queries,
          p_init=adversarial.SQUARE_P_INIT, num_classes=k)
    except ValueError as e:
      raise cli.UsageError(f"--config.eval.attack=suite cannot evaluate {config.dataset} ({k} "
                           f"classes): {e} Use --config.eval.attack=apgd (or pgd).") from None
  names = tuple(config.eval.corruption_names)
  if config.eval.corruptions == "published" and names != ("none",):
    from drojax import corruptions
    from drojax.data import published_c

    try:
      published_c.make_loader(config.dataset, folder=config.eval.published_dir or None,
                              data_dir=data_dir, names=names or corruptions.NAMES,
                              image_shape=tuple(image_shape))
    except ValueError as e:
      raise cli.UsageError(f"eval.corruptions=published: {e}") from None
