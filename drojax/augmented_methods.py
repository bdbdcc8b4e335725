"""Deprecated: the augmentations and criteria moved to :mod:`drojax.views`, the methods that
combine them to the one table in :mod:`drojax.methods`. This alias warns and will be removed in
the next release."""

import warnings

from drojax.views import (JSD_VIEWS, augmix_augment, jsd_criterion, mixup_augment,  # noqa: F401
                          noisymix_augment)

warnings.warn("drojax.augmented_methods is deprecated: the augmentations and criteria are in "
              "drojax.views, the methods in drojax.methods", DeprecationWarning, stacklevel=2)
