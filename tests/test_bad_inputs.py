"""Table of the library's bad inputs: each case is a call, the exception it must raise, and a
phrase its message must contain (issue 15). Every case fails at the boundary, before compiling
the function it guards, so the table stays cheap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import attacks, augment, corruptions
from drojax._checks import check_unit_range

_KEY = jax.random.key(0)
_F = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)  # noqa: E731
_Y = jnp.array([0, 1])
_X255 = jnp.full((2, 4, 4, 3), 128.0)  # an image in 0..255 passed by mistake
_XNEG = jnp.full((2, 4, 4, 3), -0.5)
_XNAN = jnp.full((2, 4, 4, 3), 0.5).at[1, 2, 3, 0].set(jnp.nan)
_C255 = jnp.full((1, 32, 32, 3), 255.0)

CASES = [
    # Images must lie in [0, 1] when concrete (clipping or quantizing 0..255 destroys them).
    ("fgsm_255", lambda: attacks.fgsm(_F, _X255, _Y, eps=0.1), ValueError,
     "fgsm: x must lie in [0, 1]; got values in [128, 128]. Divide 0..255 images by 255"),
    ("fgsm_nan", lambda: attacks.fgsm(_F, _XNAN, _Y, eps=0.1), ValueError, "contains NaN"),
    ("pgd_255", lambda: attacks.pgd(_KEY, _F, _X255, _Y, eps=0.1, step_size=0.1, num_steps=1),
     ValueError, "pgd: x must lie in [0, 1]"),
    ("pgd_negative", lambda: attacks.pgd(_KEY, _F, _XNEG, _Y, eps=0.1, step_size=0.1,
                                         num_steps=1), ValueError, "got values in [-0.5, -0.5]"),
    ("pgd_robust_255", lambda: attacks.pgd_robust(_KEY, _F, _X255, _Y, eps=0.1, step_size=0.1,
                                                  num_steps=1), ValueError, "divide"),
    ("robust_accuracy_255", lambda: attacks.robust_accuracy(
        _KEY, _F, _X255, _Y, eps=0.1, step_size=0.1, num_steps=1), ValueError, "by 255"),
    ("apgd_255", lambda: attacks.apgd(_KEY, _F, _X255, _Y, eps=0.1, num_steps=1), ValueError,
     "apgd: x must lie in [0, 1]"),
    ("square_255", lambda: attacks.square(_KEY, _F, _X255, _Y, eps=0.1), ValueError,
     "square: x must lie in [0, 1]"),
    ("corrupt_255", lambda: corruptions.corrupt(_KEY, _C255, name="fog", severity=1), ValueError,
     "images must lie in [0, 1]; got values in [255, 255]"),
    ("augmix_255", lambda: augment.augmix(_KEY, _X255), ValueError, "images must lie in [0, 1]"),
    ("augmix_views_255", lambda: augment.augmix_views(_KEY, _X255), ValueError, "by 255"),
    ("random_crop_flip_255", lambda: augment.random_crop_flip(_KEY, _X255), ValueError,
     "images must lie in [0, 1]"),
    ("crop_flip_nan", lambda: augment.crop_flip(_XNAN, jnp.zeros((2, 2), jnp.int32),
                                                jnp.zeros(2, bool)), ValueError, "NaN"),
    ("ops_rotate_255", lambda: augment.ops.rotate(_X255[0], 30.0), ValueError,
     "image must lie in [0, 1]"),
]


@pytest.mark.parametrize("fn,exc,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(fn, exc, phrase):
  with pytest.raises(exc) as info:
    fn()
  message = str(info.value)
  assert phrase.lower() in message.lower(), message
  assert "\n" not in message


def test_unit_range_accepts_bounds_and_skips_tracers():
  check_unit_range("x", jnp.array([0.0, 1.0]))
  check_unit_range("x", np.zeros((0, 3), np.float32))
  # Under jit the values are unknown: no error, no host sync (documented in the helper).
  out = jax.jit(lambda z: (check_unit_range("x", z), z * 2)[1])(jnp.float32(300.0))
  assert float(out) == 600.0
