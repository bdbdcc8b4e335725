"""AugMix against a PIL implementation of google-research/augmix's chain, written here."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from scipy import stats

import importlib

from _shared_data import SHARED_DATA

am = importlib.import_module("drojax.augment.augmix")  # the package re-exports the function augmix

_DATA = str(SHARED_DATA / "cifar10_test_lossless_first1000.npz")
# Shared jitted entry points and one batch shape (8 x 32 x 32 x 3) keep compiles few.
_WITH_PARAMS = jax.jit(am.augmix_with_params, static_argnames=("all_ops", "resample"))
_AUGMIX = jax.jit(am.augmix, static_argnames=("width", "depth", "severity", "alpha", "all_ops",
                                               "resample"))
_SAMPLE = jax.jit(am.sample_augmix_params, static_argnums=1,
                  static_argnames=("width", "depth", "severity", "alpha", "all_ops"))
B = 8


def _images(n):
  if os.path.exists(_DATA):
    with np.load(_DATA) as d:
      return d["images"][:n]
  return np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _pil_op(im, name, level, sign):
  """One AugMix op with the reference's parameter rules, in Python doubles."""
  int_p = lambda maxval: int(level * maxval / 10)  # noqa: E731
  float_p = lambda maxval: float(level) * maxval / 10.0  # noqa: E731
  size = im.size
  bil = Image.BILINEAR
  if name == "autocontrast":
    return ImageOps.autocontrast(im)
  if name == "equalize":
    return ImageOps.equalize(im)
  if name == "posterize":
    return ImageOps.posterize(im, 4 - int_p(4))
  if name == "rotate":
    return im.rotate(int_p(30) * sign, resample=bil)
  if name == "solarize":
    return ImageOps.solarize(im, 256 - int_p(256))
  if name == "shear_x":
    return im.transform(size, Image.AFFINE, (1, float_p(0.3) * sign, 0, 0, 1, 0), resample=bil)
  if name == "shear_y":
    return im.transform(size, Image.AFFINE, (1, 0, 0, float_p(0.3) * sign, 1, 0), resample=bil)
  if name == "translate_x":
    return im.transform(size, Image.AFFINE, (1, 0, int_p(size[0] / 3) * sign, 0, 1, 0),
                        resample=bil)
  if name == "translate_y":
    return im.transform(size, Image.AFFINE, (1, 0, 0, 0, 1, int_p(size[1] / 3) * sign),
                        resample=bil)
  factor = float_p(1.8) + 0.1
  enhance = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
             "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[name]
  return enhance(im).enhance(factor)


def _pil_augmix(image_u8, p):
  """AugMix of one uint8 image with explicit choices p (row of AugMixParams), float64."""
  im = Image.fromarray(image_u8)
  mix = np.zeros(image_u8.shape, np.float64)
  width, depth = p["ops"].shape
  for j in range(width):
    a = im.copy()
    for d in range(depth):
      op = int(p["ops"][j, d])
      if op == am.IDENTITY_OP:
        continue
      a = _pil_op(a, am.ALL_OPS[op], float(p["levels"][j, d]), float(p["signs"][j, d]))
    mix += float(p["weights"][j]) * np.asarray(a, np.float64) / 255.0
  m = float(p["skip"])
  return (1 - m) * image_u8 / 255.0 + m * mix


@pytest.mark.parametrize("all_ops", [False, True])
def test_augmix_matches_pil_chains(all_ops):
  b = B
  x_u8 = _images(b)
  x = jnp.asarray(x_u8, jnp.float32) / 255.0
  params = _SAMPLE(jax.random.key(3), b, all_ops=all_ops)
  ours = np.asarray(_WITH_PARAMS(x, params, all_ops=all_ops))
  pnp = jax.tree.map(np.asarray, params)
  ref = np.stack([_pil_augmix(x_u8[i], {k: getattr(pnp, k)[i] for k in pnp._fields})
                  for i in range(b)])
  diff = np.abs(ours - ref)
  # Resampling ops differ from PIL by one level on a few pixels (tests/test_augment_ops.py);
  # a later equalize/autocontrast can spread that, so we bound the mean and the bulk.
  assert diff.mean() <= 0.5 / 255, diff.mean()
  assert np.mean(diff <= 1.01 / 255) >= 0.99, np.mean(diff <= 1.01 / 255)
  assert ours.dtype == np.float32 and ours.min() >= 0.0 and ours.max() <= 1.0


def test_sampling_distributions_follow_the_reference():
  b = 4000
  p = _SAMPLE(jax.random.key(0), b)
  ops = np.asarray(p.ops)
  depth = (ops != am.IDENTITY_OP).sum(-1).ravel()
  np.testing.assert_allclose(np.bincount(depth, minlength=4)[1:] / depth.size, [1 / 3] * 3,
                             atol=0.02)
  # Steps are a prefix: no op after an identity.
  active = ops != am.IDENTITY_OP
  assert np.all(active[..., 1:] <= active[..., :-1])
  counts = np.bincount(ops[active], minlength=9)
  np.testing.assert_allclose(counts / counts.sum(), [1 / 9] * 9, atol=0.01)
  lv = np.asarray(p.levels)
  assert stats.kstest(lv.ravel(), stats.uniform(0.1, 2.9).cdf).pvalue > 1e-3
  assert abs(np.mean(np.asarray(p.signs) < 0) - 0.5) < 0.01
  w = np.asarray(p.weights)
  np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
  # Dirichlet(1,1,1) marginals are Beta(1, 2); Beta(1, 1) skip weights are uniform.
  assert stats.kstest(w[:, 0], stats.beta(1, 2).cdf).pvalue > 1e-3
  assert stats.kstest(np.asarray(p.skip), stats.uniform(0, 1).cdf).pvalue > 1e-3
  p2 = _SAMPLE(jax.random.key(1), b, depth=2, all_ops=True)
  assert np.all(np.asarray(p2.ops) >= 0) and np.asarray(p2.ops).max() == 12


def test_magnitudes_follow_int_and_float_parameter():
  level = jnp.array([0.1, 1.0, 2.5, 2.99, 3.0])
  sign = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0])
  mag = jax.vmap(lambda l, s: am.op_magnitudes(l, s, 32, 32))(level, sign)
  for i, (l, s) in enumerate(zip(np.asarray(level, np.float64), np.asarray(sign))):
    assert mag["posterize"][i] == 4 - int(l * 4 / 10)
    assert mag["rotate"][i] == int(l * 30 / 10) * s
    assert mag["solarize"][i] == 256 - int(l * 256 / 10)
    assert mag["translate_x"][i] == int(l * (32 / 3) / 10) * s
    np.testing.assert_allclose(mag["shear"][i], l * 0.3 / 10 * s, rtol=1e-6)
    np.testing.assert_allclose(mag["factor"][i], l * 1.8 / 10 + 0.1, rtol=1e-6)


class AugMixPropertiesTest(chex.TestCase):

  def test_keys_range_and_per_example_independence(self):
    x = jnp.asarray(_images(B), jnp.float32) / 255.0
    fn = _AUGMIX  # eager execution of the whole chain is slow; jit only
    a = fn(jax.random.key(0), x)
    np.testing.assert_array_equal(a, fn(jax.random.key(0), x))
    c = fn(jax.random.key(1), x)
    self.assertTrue(np.all(np.any(np.asarray(a) != np.asarray(c), axis=(1, 2, 3))))
    self.assertEqual(a.dtype, jnp.float32)
    self.assertGreaterEqual(float(a.min()), 0.0)
    self.assertLessEqual(float(a.max()), 1.0)

  def test_batch_equals_loop(self):
    # 64 examples x 3 chains is large enough for _run_chains to run the later steps on the
    # depth-sorted prefix only (random depths), or to fall back to the full step (all depth 3);
    # one example alone always takes the full step.
    b = 64
    x = jnp.asarray(_images(b), jnp.float32) / 255.0
    f = _WITH_PARAMS
    random_depth = _SAMPLE(jax.random.key(5), b)
    all_deep = random_depth._replace(
        ops=jnp.where(random_depth.ops < 0, 0, random_depth.ops))  # autocontrast instead
    for p in (random_depth, all_deep):
      batch = np.asarray(f(x, p))
      for i in (0, 17, 40, 63):
        one = f(x[i:i + 1], jax.tree.map(lambda t, i=i: t[i:i + 1], p))
        np.testing.assert_allclose(batch[i], one[0], atol=1e-6)

  def test_skip_zero_is_identity_and_views(self):
    x = jnp.asarray(_images(B), jnp.float32) / 255.0
    p = _SAMPLE(jax.random.key(2), B)._replace(skip=jnp.zeros(B))
    np.testing.assert_allclose(_WITH_PARAMS(x, p), x, atol=1e-7)
    x = x[:B // 2]
    v = jax.jit(am.augmix_views)(jax.random.key(0), x)
    self.assertEqual(v.shape, (B // 2, 3, 32, 32, 3))
    np.testing.assert_array_equal(v[:, 0], x)
    self.assertFalse(np.array_equal(v[:, 1], v[:, 2]))

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "images must be"):
      am.augmix(jax.random.key(0), jnp.zeros((8, 8, 3)))
    with self.assertRaisesRegex(ValueError, "depth"):
      am.augmix(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), depth=0)
    with self.assertRaisesRegex(ValueError, "severity"):
      am.augmix(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), severity=11)
