"""API of drojax.corruptions: names, argument checks, range/dtype under jit, keys, severities."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import corruptions
from drojax.corruptions import tables, weather


def _images(n=4, seed=0):
  rng = np.random.default_rng(seed)
  # Smooth-ish real-looking content: a gradient plus noise, as multiples of 1/255.
  base = np.linspace(0, 1, 32)[None, :, None, None] * np.ones((n, 32, 32, 3))
  x = 0.6 * base + 0.4 * rng.uniform(size=(n, 32, 32, 3))
  return jnp.asarray(np.round(x * 255) / 255, jnp.float32)


STOCHASTIC = ("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
              "snow", "frost", "fog", "elastic_transform", "speckle_noise", "spatter")


def test_names_order_and_split():
  assert len(corruptions.NAMES) == 19 and len(set(corruptions.NAMES)) == 19
  assert corruptions.NAMES[:15] == corruptions.STANDARD_NAMES
  assert corruptions.STANDARD_NAMES[0] == "gaussian_noise"
  assert corruptions.STANDARD_NAMES[-1] == "jpeg_compression"
  assert corruptions.NAMES[15:] == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
  for table in corruptions.TABLES:
    for name in corruptions.NAMES:
      rows = tables.rows(name, table)
      assert len(rows) == 5 and len({len(r) for r in rows}) == 1


def test_tables_match_reference_figures():
  # Spot checks against the figures in the severities document (typed independently).
  assert tables.rows("shot_noise")[2] == (100.,)
  assert tables.rows("snow")[4] == (.3, .3, 1.25, .65, 14., 12., .8)
  assert tables.rows("jpeg_compression", "refined")[4] == (5.,)
  assert tables.rows("zoom_blur", "refined_cifar100")[4] == (1.70,)
  assert tables.rows("glass_blur", "refined")[4] == (.5, 1., 2., .45)
  assert tables.rows("saturate", "refined") == tables.rows("saturate", "standard")


_JITTED = {}


def _traced(name, table="standard"):
  """One compiled function per (name, table) with a traced severity, shared by the tests."""
  if (name, table) not in _JITTED:
    _JITTED[name, table] = jax.jit(lambda k, im, s: corruptions.corrupt(
        k, im, name=name, severity=s, table=table))
  return _JITTED[name, table]


@pytest.mark.parametrize("name", corruptions.NAMES)
def test_range_dtype_shape_under_jit(name):
  x = _images()
  for sev in (1, 5):
    y = _traced(name)(jax.random.key(1), x, jnp.asarray(float(sev)))
    chex.assert_shape(y, x.shape)
    assert y.dtype == jnp.float32
    y = np.asarray(y)
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_key_same_output_different_key_different(name):
  x = _images()
  fn = _traced(name)
  s = jnp.asarray(3.0)
  a = fn(jax.random.key(3), x, s)
  b = fn(jax.random.key(3), x, s)
  c = fn(jax.random.key(4), x, s)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.max(np.abs(np.asarray(a) - np.asarray(c))) > 1e-3
  # Every example draws its own randomness: identical inputs get different corruptions.
  same = jnp.broadcast_to(x[:1], x.shape)
  d = np.asarray(fn(jax.random.key(3), same, s))
  assert np.max(np.abs(d[0] - d[1])) > 1e-3


@pytest.mark.parametrize("name", corruptions.NAMES)
def test_python_float_severity_gives_the_table_row(name):
  for table in corruptions.TABLES:
    for sev in range(1, 6):
      a = tables.params_at(name, sev, table)
      b = tables.params_at(name, float(sev), table)
      if name == "zoom_blur":  # represented by its factor count
        assert len(np.arange(1, a[0], 0.01)) == len(np.arange(1, b[0], 0.01))
      else:
        assert a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("name", corruptions.NAMES)
def test_traced_severity_equals_table_at_integers(name):
  x = _images()
  table = "refined" if name == "glass_blur" else "standard"  # the swap-ratio variant
  static = jax.jit(lambda k, im: corruptions.corrupt(k, im, name=name, severity=4, table=table))
  a = np.asarray(static(jax.random.key(5), x))
  b = np.asarray(_traced(name, table)(jax.random.key(5), x, jnp.asarray(4.0)))
  # Parameters round-trip through float32 interpolation (e.g. a Poisson rate of 74.99999),
  # which may flip a rare random draw; everything else agrees to float precision.
  close = np.abs(a - b) <= 2e-5
  assert close.mean() > 0.995, (name, close.mean())
  assert np.mean(np.abs(a - b)) < 1e-3


@pytest.mark.parametrize("name", [n for n in corruptions.NAMES
                                  if n not in ("jpeg_compression", "glass_blur")])
def test_severity_zero_is_identity(name):
  # Row 0 of the interpolation holds identity parameters (JPEG has none; glass blur floors
  # to 8 bits as the reference does).
  x = _images()
  y = _traced(name)(jax.random.key(0), x, jnp.asarray(0.0))
  np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-6)


def test_continuous_severity_interpolates_parameters():
  assert tables.params_at("contrast", 2.5) == pytest.approx((0.45,))
  assert tables.params_at("gaussian_noise", 0.5) == pytest.approx((0.02,))
  # Shot noise interpolates the reciprocal rate: halfway between 250 and 100 is 1/(.5/250+.5/100).
  assert tables.params_at("shot_noise", 2.5) == pytest.approx((1 / (0.5 / 250 + 0.5 / 100),))
  traced = tables.params_at("fog", jnp.asarray(3.25))
  np.testing.assert_allclose([float(v) for v in traced], [0.8125, 2.375], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="blur", severity=1), "name must be one of"),
    (dict(name="fog", severity=1, table="cifar10"), "table must be one of"),
    (dict(name="fog", severity=0), "severity"),
    (dict(name="fog", severity=6), "severity"),
    (dict(name="fog", severity=5.5), "severity"),
    (dict(name="fog", severity=-0.1), "severity"),
    (dict(name="fog", severity=True), "severity"),
    (dict(name="fog", severity="3"), "severity"),
    (dict(name="fog", severity=jnp.ones(2)), "severity"),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    corruptions.corrupt(jax.random.key(0), _images(1), **kwargs)


def test_bad_images_raise():
  with pytest.raises(ValueError, match="images"):
    corruptions.corrupt(jax.random.key(0), jnp.zeros((32, 32, 3)), name="fog", severity=1)
  with pytest.raises(TypeError, match="images"):
    corruptions.corrupt(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8), name="fog",
                        severity=1)
  with pytest.raises(ValueError, match="RGB"):
    corruptions.corrupt(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), name="fog", severity=1)


def test_frost_user_textures_follow_formula():
  x = _images(3)
  tex = jnp.full((2, 40, 48, 3), 0.25)
  y = corruptions.corrupt(jax.random.key(0), x, name="frost", severity=3, frost_textures=tex)
  a, b = tables.rows("frost")[2]
  np.testing.assert_allclose(np.asarray(y), np.clip(a * np.asarray(x) + b * 0.25, 0, 1),
                             atol=1e-6)
  with pytest.raises(ValueError, match="textures"):
    corruptions.corrupt(jax.random.key(0), x, name="frost", severity=1,
                        frost_textures=jnp.zeros((1, 16, 16, 3)))


def test_plasma_range():
  p = np.asarray(jax.jit(weather.plasma_fractal, static_argnums=1)(jax.random.key(0), 32, 2.0))
  assert p.shape == (32, 32) and p.min() == 0.0 and p.max() == pytest.approx(1.0)
  # procedural_frost: range and statistics in test_corruptions_frost.py


def test_non_square_images():
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 24, 40, 3)), jnp.float32)
  for name in ("zoom_blur", "fog", "jpeg_compression"):
    y = jax.jit(lambda k, im: corruptions.corrupt(k, im, name=name, severity=3))(
        jax.random.key(0), x)
    assert y.shape == x.shape
