"""Adversarial attacks in pixel space, pure and jitted: FGSM, PGD, APGD, APGD-T, Square, and
the worst-case suite of AutoAttack's standard version.

Images are NHWC float in [0, 1]; a model meets an attack as ``logits_fn(x) -> [B, K]`` (eval
mode, examples independent). Every attack takes ``key`` first (FGSM has no randomness) and
keyword-only options, keeps ``||x_adv - x|| <= eps`` and ``x_adv`` in [0, 1].

Modules: :mod:`~drojax.attacks.projected` (FGSM, PGD and the shared checks/projections),
:mod:`~drojax.attacks.auto` (APGD, APGD-T), :mod:`~drojax.attacks.square_attack` (Square),
:mod:`~drojax.attacks.fab_attack` (FAB, FAB-T), :mod:`~drojax.attacks.suite` (the worst case
over APGD-CE, APGD-T, FAB-T and Square).
"""

from drojax.attacks.auto import (LOSSES, apgd, apgd_robust, apgd_targeted, apgd_targeted_robust,
                                 apgd_trace, checkpoints, dlr_loss, dlr_targeted_loss)
from drojax.attacks.fab_attack import (FAB_NORMS, check_fab_options, fab, fab_robust,
                                       project_hyperplane_box)
from drojax.attacks.projected import (NORMS, START_MODES, check_pgd_options, count_classes,
                                      default_unroll, fgsm, per_example_loss, pgd, pgd_robust,
                                      projected_ascent, robust_accuracy)
from drojax.attacks.square_attack import SQUARE_NORMS, margin, p_schedule, square, square_robust
from drojax.attacks.suite import (SUITE_ATTACKS, attack_stage, check_suite_options,
                                  robust_accuracy_suite, robust_suite)

__all__ = [
    "NORMS", "LOSSES", "SQUARE_NORMS", "SUITE_ATTACKS", "default_unroll", "per_example_loss",
    "fgsm", "pgd", "pgd_robust", "robust_accuracy", "checkpoints", "dlr_loss",
    "dlr_targeted_loss", "apgd", "apgd_robust", "apgd_targeted", "apgd_targeted_robust",
    "apgd_trace", "margin", "p_schedule", "square", "square_robust", "check_suite_options",
    "robust_suite", "robust_accuracy_suite", "check_pgd_options", "count_classes",
    "attack_stage", "START_MODES", "projected_ascent", "FAB_NORMS", "fab", "fab_robust",
    "check_fab_options", "project_hyperplane_box",
]
