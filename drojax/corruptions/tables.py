"""Severity tables of the CIFAR-C corruptions and continuous-severity interpolation.

Figures from ``shared/reference/cifar_c_severities.md``:

* ``standard``: the table that made the published CIFAR-10-C / CIFAR-100-C (Hendrycks &
  Dietterich, ICLR 2019; ``make_cifar_c.py`` in hendrycks/robustness).
* ``refined`` / ``refined_cifar100``: DRO-Augment's recalibrated CIFAR-10 / CIFAR-100 tables
  (``NewBench/cifar10_newbench.py``, ``cifar100_newbench.py`` in brownight/DRO-Augment). They
  cover the 15 standard corruptions; the 4 extras fall back to their standard rows.

A severity ``s`` is an int 1..5 (a table row) or a float in [0, 5]: the parameters are then
interpolated linearly between the rows ``floor(s)`` and ``ceil(s)``, where row 0 is the
*identity row* below (the parameters that leave the image unchanged, where such exist).
Shot noise's Poisson rate is interpolated as its reciprocal (so row 0, rate = infinity, is
noise-free). Zoom blur interpolates the number of zoom factors (``np.arange(1, max_zoom,
0.01)`` has 7 factors at 1.06 but 16 at 1.16), rounded to the nearest count. JPEG
interpolates its quality between 100 (row 0) and row 1; quality 100 is *not* the identity (it
still rounds DCT coefficients and subsamples chroma). Motion blur's row 0 is radius 0 (no
blur; ImageMagick would pick a radius from sigma instead). Parameters that are integers in the
reference are handled by the corruption itself (glass blur's iterations: a fractional last
sweep; spatter's mode: a blend of the water and mud outputs).
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from drojax._checks import check_scalar_range

STANDARD_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_NAMES = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
NAMES = STANDARD_NAMES + EXTRA_NAMES
TABLES = ("standard", "refined", "refined_cifar100")

# Each row is a tuple of the corruption's parameters (scalars are 1-tuples).
STANDARD = {
    "gaussian_noise": ((.04,), (.06,), (.08,), (.09,), (.10,)),
    "shot_noise": ((500.,), (250.,), (100.,), (75.,), (50.,)),
    "impulse_noise": ((.01,), (.02,), (.03,), (.05,), (.07,)),
    "defocus_blur": ((.3, .4), (.4, .5), (.5, .6), (1., .2), (1.5, .1)),
    "glass_blur": ((.05, 1., 1.), (.25, 1., 1.), (.4, 1., 1.), (.25, 1., 2.), (.4, 1., 2.)),
    "motion_blur": ((6., 1.), (6., 1.5), (6., 2.), (8., 2.), (9., 2.5)),
    "zoom_blur": ((1.06,), (1.11,), (1.16,), (1.21,), (1.26,)),
    "snow": ((.1, .2, 1., .6, 8., 3., .95), (.1, .2, 1., .5, 10., 4., .9),
             (.15, .3, 1.75, .55, 10., 4., .9), (.25, .3, 2.25, .6, 12., 6., .85),
             (.3, .3, 1.25, .65, 14., 12., .8)),
    "frost": ((1., .2), (1., .3), (.9, .4), (.85, .4), (.75, .45)),
    "fog": ((.2, 3.), (.5, 3.), (.75, 2.5), (1., 2.), (1.5, 1.75)),
    "brightness": ((.05,), (.1,), (.15,), (.2,), (.3,)),
    "contrast": ((.75,), (.5,), (.4,), (.3,), (.15,)),
    # (alpha, sigma, affine jitter) as fractions of the image side (x 32 for CIFAR).
    "elastic_transform": ((0., 0., .08), (.05, .2, .07), (.08, .06, .06), (.1, .04, .05),
                          (.1, .03, .03)),
    "pixelate": ((.95,), (.9,), (.85,), (.75,), (.65,)),
    "jpeg_compression": ((80.,), (65.,), (58.,), (50.,), (40.,)),
    "speckle_noise": ((.06,), (.1,), (.12,), (.16,), (.2,)),
    "gaussian_blur": ((.4,), (.6,), (.7,), (.8,), (1.,)),
    "spatter": ((.62, .1, .7, .7, .5, 0.), (.65, .1, .8, .7, .5, 0.), (.65, .3, 1., .69, .5, 0.),
                (.65, .1, .7, .69, .6, 1.), (.65, .1, .5, .68, .6, 1.)),
    "saturate": ((.3, 0.), (.1, 0.), (1.5, 0.), (2., .1), (2.5, .2)),
}

REFINED_CIFAR10 = {
    "gaussian_noise": ((.035,), (.065,), (.085,), (.10,), (.12,)),
    "shot_noise": ((450.,), (102.,), (62.,), (42.,), (30.,)),
    "impulse_noise": ((.0055,), (.014,), (.025,), (.035,), (.046,)),
    "defocus_blur": ((.35, .45), (.4, .65), (.44, .9), (.89, 1.8), (1.2, 1.9)),
    # (sigma, max shift, iterations, swap ratio): the swap-ratio glass blur.
    "glass_blur": ((.01, 1., 1., .07), (.4, 1., 1., .19), (.4, 1., 1., .38), (.3, 1., 2., .2),
                   (.5, 1., 2., .45)),
    "motion_blur": ((1., .8), (6., 1.4), (6., 2.), (9., 2.8), (7., 3.5)),
    "zoom_blur": ((1.04,), (1.13,), (1.22,), (1.28,), (1.40,)),
    "snow": ((.015, .07, 1., .1, 5., 5., .95), (.09, .1, 1., .1, 9., 9., .85),
             (.09, .2, 1.25, .2, 10., 20., .65), (.1, .3, 1.75, .3, 12., 20., .65),
             (.2, .3, 1.25, .4, 8., 18., .62)),
    "frost": ((1., .2), (1., .4), (.8, .5), (.9, .6), (1., .68)),
    # The refined source's fog body differs; we run the standard plasma fog with these figures.
    "fog": ((.4, 3.), (.75, 2.5), (1.05, 2.), (1.3, 2.), (1.55, 1.75)),
    "brightness": ((.148,), (.33,), (.45,), (.53,), (.62,)),
    "contrast": ((.76,), (.57,), (.45,), (.39,), (.33,)),
    "elastic_transform": ((0., 0., .03), (.2, .2, .085), (.2, .2, .142), (.2, .2, .19),
                          (.2, .2, .24)),
    "pixelate": ((.9,), (.69,), (.55,), (.48,), (.43,)),
    "jpeg_compression": ((86.,), (31.,), (14.,), (9.,), (5.,)),
}

REFINED_CIFAR100 = {
    "gaussian_noise": ((.0035,), (.055,), (.075,), (.09,), (.12,)),
    "shot_noise": ((1450.,), (162.,), (95.,), (50.,), (30.,)),
    "impulse_noise": ((.00055,), (.008,), (.016,), (.028,), (.036,)),
    "defocus_blur": ((.35, .4), (.4, .6), (.44, .85), (.9, 1.9), (1.55, 2.2)),
    "glass_blur": ((.001, 1., 1., .03), (.4, 1., 1., .16), (.4, 1., 1., .3), (.3, 1., 2., .21),
                   (.3, 1., 2., .29)),
    "motion_blur": ((1., .6), (6., 1.2), (6., 2.), (9., 2.9), (7., 5.)),
    "zoom_blur": ((1.04,), (1.13,), (1.22,), (1.36,), (1.70,)),
    "snow": ((.001, .07, 1., .1, 5., 5., .95), (.009, .1, 1., .1, 9., 9., .85),
             (.009, .16, 1.25, .2, 10., 20., .65), (.015, .33, 1.75, .3, 12., 20., .65),
             (.025, .47, 1.75, .4, 12., 18., .62)),
    "frost": ((1., .16), (1.1, .3), (1., .4), (.8, .53), (.9, .65)),
    "fog": ((.3, 3.5), (.5, 2.75), (.9, 2.2), (1.15, 2.), (1.45, 1.85)),
    "brightness": ((.12,), (.24,), (.36,), (.49,), (.62,)),
    "contrast": ((.81,), (.59,), (.45,), (.39,), (.30,)),
    "elastic_transform": ((0., 0., .01), (.2, .2, .075), (.2, .2, .142), (.2, .2, .19),
                          (.2, .2, .29)),
    "pixelate": ((.94,), (.67,), (.52,), (.45,), (.35,)),
    "jpeg_compression": ((90.,), (35.,), (15.,), (8.,), (5.,)),
}

# Row 0 of the interpolation: parameters with no effect, where the corruption has them.
# Shot noise's infinite rate is noise-free (interpolated as the reciprocal; see _INVERSE).
IDENTITY = {
    "gaussian_noise": (0.,),
    "shot_noise": (math.inf,),
    "impulse_noise": (0.,),
    "defocus_blur": (0., 0.),
    "glass_blur": (0., 1., 0.),
    "motion_blur": (0., None),  # radius 0 = no blur; sigma taken from row 1
    "zoom_blur": (1.,),
    "snow": (0., 0., 1., 1., 0., None, 1.),
    "frost": (1., 0.),
    "fog": (0., None),
    "brightness": (0.,),
    "contrast": (1.,),
    "elastic_transform": (0., 0., 0.),
    "pixelate": (1.,),
    "jpeg_compression": (100.,),  # not an identity: see the module docstring
    "speckle_noise": (0.,),
    "gaussian_blur": (0.,),
    "spatter": (None, None, None, None, 0., 0.),  # water mode at zero intensity
    "saturate": (1., 0.),
}
_GLASS_REFINED_IDENTITY = (0., 1., 0., 0.)
# (name, parameter index) interpolated as the reciprocal.
_INVERSE = {("shot_noise", 0)}

_TABLES = {
    "standard": STANDARD,
    "refined": {**STANDARD, **REFINED_CIFAR10},
    "refined_cifar100": {**STANDARD, **REFINED_CIFAR100},
}


def check_name(name: Any) -> str:
  if name not in NAMES:
    raise ValueError(f"name must be one of {NAMES}; got {name!r}")
  return name


def check_table(table: Any) -> str:
  if table not in TABLES:
    raise ValueError(f"table must be one of {TABLES}; got {table!r}")
  return table


def rows(name: str, table: str = "standard") -> tuple[tuple[float, ...], ...]:
  """The 5 parameter rows of ``name`` in ``table``."""
  return _TABLES[check_table(table)][check_name(name)]


def _identity_row(name: str, table: str) -> tuple[float, ...]:
  first = rows(name, table)[0]
  ident = _GLASS_REFINED_IDENTITY if (name == "glass_blur" and len(first) == 4) else IDENTITY[name]
  out = []
  for i, v in enumerate(ident):
    if v is None:
      v = first[i]
    out.append(v)
  return tuple(out)


def _to_space(name: str, i: int, v: float) -> float:
  if (name, i) in _INVERSE:
    return 1.0 / v
  if name == "zoom_blur":  # the number of zoom factors, as np.arange(1, v, 0.01) counts them
    return float(len(np.arange(1.0, v, 0.01)))
  return v


def _from_space(name: str, i: int, v: Any) -> Any:
  if name == "zoom_blur":  # a max zoom whose factor count is unambiguous in float32 too
    return 1.0 + 0.01 * (v - 0.5)
  if (name, i) in _INVERSE:
    if isinstance(v, float):
      return math.inf if v == 0 else 1.0 / v
    return jnp.where(v == 0, jnp.inf, 1.0 / jnp.where(v == 0, 1.0, v))
  return v


def check_severity(severity: Any) -> Any:
  """Validates a severity; a traced one passes through (outside [0, 5] it gives NaN later)."""
  if isinstance(severity, bool):
    raise ValueError(f"severity must be an int 1..5 or a float in [0, 5]; got {severity!r}")
  if isinstance(severity, int):
    if not 1 <= severity <= 5:
      raise ValueError(f"severity must be an int 1..5 or a float in [0, 5]; got {severity!r}")
    return severity
  if isinstance(severity, float):
    if not (0.0 <= severity <= 5.0):
      raise ValueError(f"severity must be an int 1..5 or a float in [0, 5]; got {severity!r}")
    return severity
  try:
    arr = jnp.asarray(severity)
  except TypeError as e:
    raise ValueError(
        f"severity must be an int 1..5 or a float in [0, 5]; got {type(severity).__name__}") from e
  if arr.ndim != 0:
    raise ValueError(f"severity must be a scalar; got shape {arr.shape}")
  check_scalar_range("severity", arr, low=0.0, high=5.0, expected="a number in [0, 5]")
  return arr


def params_at(name: str, severity: Any, table: str = "standard") -> tuple[Any, ...]:
  """Parameters of ``name`` at ``severity`` (see the module docstring).

  Python ints and floats give Python floats (static: array sizes follow them exactly); a JAX
  scalar gives traced scalars (clipped to [0, 5]; sizes then follow documented bounds).

  >>> params_at("contrast", 2)
  (0.5,)
  >>> params_at("contrast", 1.5)
  (0.625,)
  """
  severity = check_severity(severity)
  table_rows = rows(name, table)
  if isinstance(severity, int):
    return tuple(float(v) for v in table_rows[severity - 1])
  grid = (_identity_row(name, table),) + tuple(table_rows)
  grid = tuple(tuple(_to_space(name, i, float(v)) for i, v in enumerate(r)) for r in grid)
  if isinstance(severity, float):
    lo = int(math.floor(severity))
    hi = min(lo + 1, 5)
    t = severity - lo
    if t == 0.0:
      vals = grid[lo]
    else:
      vals = tuple((1 - t) * a + t * b for a, b in zip(grid[lo], grid[hi]))
    return tuple(_from_space(name, i, float(v)) for i, v in enumerate(vals))
  s = severity.astype(jnp.float32)
  s = jnp.where((s >= 0.0) & (s <= 5.0), s, jnp.nan)  # traced, unchecked: NaN, not clipped
  xs = jnp.arange(6, dtype=jnp.float32)
  out = []
  for i in range(len(grid[0])):
    ys = jnp.asarray([r[i] for r in grid], jnp.float32)
    out.append(_from_space(name, i, jnp.interp(s, xs, ys)))
  return tuple(out)
