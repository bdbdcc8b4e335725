"""On-device data augmentation: pure functions, ``key`` first, NHWC float32 images in [0, 1].

Every example draws its own randomness (crop offsets, flips, AugMix ops and magnitudes).
"""

from drojax.augment.crop_flip import crop_flip, random_crop_flip
from drojax.augment.mixing import MixPlan, NO_MIXING, apply_mix_plan, mix_and_perturb
from drojax.augment.mixup import mixup, mixup_with_lambda, sample_mixup_params

__all__ = [
    "MixPlan",
    "NO_MIXING",
    "apply_mix_plan",
    "crop_flip",
    "mix_and_perturb",
    "mixup",
    "mixup_with_lambda",
    "random_crop_flip",
    "sample_mixup_params",
]
