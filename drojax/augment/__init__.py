"""On-device data augmentation: pure functions, ``key`` first, NHWC float32 images in [0, 1]."""

from drojax.augment.mixing import MixPlan, NO_MIXING, apply_mix_plan, mix_and_perturb

__all__ = ["MixPlan", "NO_MIXING", "apply_mix_plan", "mix_and_perturb"]
