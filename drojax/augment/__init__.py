"""On-device data augmentation: pure functions, ``key`` first, NHWC float32 images in [0, 1].

Every example draws its own randomness (crop offsets, flips, AugMix ops and magnitudes).
Concrete images outside [0, 1] (e.g. 0..255) are a ValueError at the entry of the crop/flip,
AugMix and single-image ops; under ``jit`` the values are not visible and the check is skipped.
Mixup takes any float inputs (a convex combination keeps any range); its targets must be
probability rows (checked when concrete).

* ``random_crop_flip`` / ``crop_flip``: pad-4 random crop and horizontal flip (CIFAR).
* ``mixup`` / ``mixup_with_lambda``: Mixup with soft targets.
* ``augmix`` / ``augmix_views`` / ``augmix_with_params``: AugMix and its JSD views;
  ``drojax.augment.ops`` holds the 13 PIL-matching image ops.
* ``sample_noisymix_plan``: NoisyMix's hidden-layer ``MixPlan`` (applied by the model).
"""

from drojax.augment import ops
from drojax.augment.augmix import (ALL_OPS, AUGMIX_OPS, AugMixParams, augmix, augmix_views,
                                   augmix_with_params, sample_augmix_params)
from drojax.augment.crop_flip import crop_flip, random_crop_flip
from drojax.augment.mixing import MixPlan, NO_MIXING, apply_mix_plan, mix_and_perturb
from drojax.augment.mixup import mixup, mixup_with_lambda, sample_mixup_params
from drojax.augment.noisymix import sample_noisymix_plan

__all__ = [
    "ALL_OPS",
    "AUGMIX_OPS",
    "AugMixParams",
    "MixPlan",
    "NO_MIXING",
    "apply_mix_plan",
    "augmix",
    "augmix_views",
    "augmix_with_params",
    "crop_flip",
    "mix_and_perturb",
    "mixup",
    "mixup_with_lambda",
    "ops",
    "random_crop_flip",
    "sample_augmix_params",
    "sample_mixup_params",
    "sample_noisymix_plan",
]
