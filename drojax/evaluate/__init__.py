"""Evaluation over a dataset: clean, corrupted (CIFAR-C, generated or published), adversarial
and group accuracy.

Every function takes a model as ``logits_fn`` or a :class:`BoundModel` and host arrays
(NumPy), batches them (the last batch is padded so nothing recompiles), shows a tqdm progress
bar and returns plain Python numbers and dicts ready for
:func:`experiments.reporting.write_results`. Images arrive as uint8 NHWC (divided by 255) or
float NHWC in [0, 1]; the library works in float32 [0, 1].

Modules:

* :mod:`~drojax.evaluate.batching`: models as ``(apply_fn, variables)``, batching and padding,
  the jitted predictor, the fixed evaluation key;
* :mod:`~drojax.evaluate.clean`: predictions and clean accuracy;
* :mod:`~drojax.evaluate.corruption`: accuracy per corruption x severity and its summary;
* :mod:`~drojax.evaluate.adversarial`: PGD, APGD-CE and the worst-case suite on survivors;
* :mod:`~drojax.evaluate.groups`: per-group and worst-group accuracy;
* :mod:`~drojax.evaluate.protocol`: :func:`evaluate`, the whole protocol from an
  :class:`EvalConfig`;
* :mod:`~drojax.evaluate.share`: a process's share of the batches in a multi-process run
  (:class:`Share`), and the sums over processes;
* :mod:`~drojax.evaluate.calibration`: continuous corruption severities whose accuracies fall
  linearly (``experiments.calibrate_severities``).
"""

from drojax.evaluate.adversarial import (ATTACK_LABELS, ATTACKS, adversarial_accuracy,
                                         auto_attack_accuracy, eps_key)
from drojax.evaluate.batching import EVAL_SEED, BoundModel, bind, eval_key
from drojax.evaluate.clean import clean_accuracy, predict
from drojax.evaluate.corruption import (FAMILIES, SEVERITIES, corruption_accuracy,
                                        published_corruption_accuracy, summarize_corruptions)
from drojax.evaluate.groups import group_accuracy
from drojax.evaluate.protocol import EvalConfig, evaluate
from drojax.evaluate.share import Share

__all__ = [
    "EVAL_SEED", "FAMILIES", "SEVERITIES", "BoundModel", "bind", "EvalConfig", "eval_key",
    "predict",
    "clean_accuracy", "corruption_accuracy", "published_corruption_accuracy",
    "summarize_corruptions", "eps_key", "adversarial_accuracy", "ATTACKS", "ATTACK_LABELS",
    "auto_attack_accuracy", "group_accuracy", "evaluate", "Share",
]
