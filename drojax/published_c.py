"""Deprecated: the published CIFAR-C loader moved to :mod:`drojax.data.published_c`.

This alias warns and will be removed in the next release.
"""

import warnings

from drojax.data.published_c import *  # noqa: F401,F403


warnings.warn("drojax.published_c moved to drojax.data.published_c; import it from there",
              DeprecationWarning, stacklevel=2)
