"""Tests for random crop/flip and mixup against NumPy references written here."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from drojax.augment import crop_flip, mixup, mixup_with_lambda, random_crop_flip
from drojax.augment.mixup import sample_mixup_params


def _np_crop_flip(images, offsets, flips, padding, mode):
  out = []
  for img, (dy, dx), f in zip(images, offsets, flips):
    p = np.pad(img, ((padding, padding), (padding, padding), (0, 0)), mode=mode)
    h, w = img.shape[:2]
    c = p[dy:dy + h, dx:dx + w]
    out.append(c[:, ::-1] if f else c)
  return np.stack(out)


class CropFlipTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("constant", "reflect", "edge")
  def test_matches_numpy(self, mode):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 8, 8, 3)).astype(np.float32)
    offsets = rng.integers(0, 9, size=(6, 2)).astype(np.int32)
    flips = rng.integers(0, 2, size=6).astype(bool)
    fn = self.variant(lambda a, o, f: crop_flip(a, o, f, padding=4, pad_mode=mode))
    np.testing.assert_array_equal(fn(x, offsets, flips), _np_crop_flip(x, offsets, flips, 4, mode))

  @chex.variants(with_jit=True, without_jit=True)
  def test_random_range_dtype_keys(self):
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 3))
    fn = self.variant(random_crop_flip)
    a = fn(jax.random.key(0), x)
    b = fn(jax.random.key(0), x)
    c = fn(jax.random.key(2), x)
    self.assertEqual(a.dtype, x.dtype)
    self.assertEqual(a.shape, x.shape)
    np.testing.assert_array_equal(a, b)
    self.assertGreaterEqual(float(a.min()), 0.0)
    self.assertLessEqual(float(a.max()), 1.0)
    # Different keys change (nearly) every example: each one draws its own crop and flip.
    differs = np.any(np.asarray(a) != np.asarray(c), axis=(1, 2, 3))
    self.assertGreaterEqual(differs.sum(), 12)

  def test_every_crop_is_a_reference_crop(self):
    # Each output example equals the NumPy crop for one of the 9*9*2 (offset, flip) choices.
    x = jax.random.uniform(jax.random.key(3), (8, 8, 8, 1))
    out = np.asarray(random_crop_flip(jax.random.key(4), x, padding=2))
    seen = set()
    for i in range(8):
      found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
               if np.array_equal(out[i], _np_crop_flip(np.asarray(x[i:i + 1]), [(dy, dx)], [f], 2,
                                                       "constant")[0])]
      self.assertNotEmpty(found)
      seen.add(found[0])
    self.assertGreater(len(seen), 1)

  def test_offset_distribution_uniform(self):
    # A 1x1 image padded by 1 reveals the chosen offset: the pixel lands at (1-dy, 1-dx).
    x = jnp.ones((4000, 1, 1, 1))
    ones = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.asarray(random_crop_flip(jax.random.key(5), ones, padding=1))
    centre_hits = out[:, 1, 1, 0].mean()  # offset (1, 1) has probability 1/9
    self.assertAlmostEqual(centre_hits, 1 / 9, delta=0.02)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "images"):
      random_crop_flip(jax.random.key(0), jnp.zeros((8, 8, 3)))
    with self.assertRaisesRegex(TypeError, "images"):
      random_crop_flip(jax.random.key(0), jnp.zeros((2, 8, 8, 3), jnp.uint8))
    with self.assertRaisesRegex(ValueError, "pad_mode"):
      random_crop_flip(jax.random.key(0), jnp.zeros((2, 8, 8, 3)), pad_mode="wrap")


class MixupTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
  def test_convex_combination_vs_numpy(self, lam, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(5, 4, 4, 2)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=5)]
    perm = rng.permutation(5).astype(np.int32)
    xm, ym = self.variant(mixup_with_lambda)(x, y, np.float32(lam), perm)
    lam64 = np.float64(np.float32(lam))
    np.testing.assert_allclose(xm, lam64 * x + (1 - lam64) * x[perm], atol=1e-6)
    np.testing.assert_allclose(ym, lam64 * y + (1 - lam64) * y[perm], atol=1e-6)
    np.testing.assert_allclose(np.sum(ym, axis=1), 1.0, atol=1e-6)
    self.assertGreaterEqual(float(xm.min()), 0.0)
    self.assertLessEqual(float(xm.max()), 1.0)

  def test_lambda_one_is_identity_and_per_example_lambda(self):
    x = jax.random.uniform(jax.random.key(0), (4, 3, 3, 1))
    y = jax.nn.one_hot(jnp.arange(4), 4)
    perm = jnp.array([3, 2, 1, 0])
    xm, ym = mixup_with_lambda(x, y, jnp.float32(1.0), perm)
    np.testing.assert_array_equal(xm, x)
    np.testing.assert_array_equal(ym, y)
    lam = jnp.array([1.0, 0.0, 0.5, 0.25])
    xm, ym = mixup_with_lambda(x, y, lam, perm)
    lam4 = np.asarray(lam)[:, None, None, None]
    ref = lam4 * np.asarray(x) + (1 - lam4) * np.asarray(x)[perm]
    np.testing.assert_allclose(xm, ref, atol=1e-6)
    np.testing.assert_allclose(ym[3], [0.75, 0, 0, 0.25], atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_random_mixup(self):
    x = jax.random.uniform(jax.random.key(0), (8, 4, 4, 3))
    y = jax.nn.one_hot(jnp.arange(8) % 3, 3)
    fn = self.variant(lambda k, a, b: mixup(k, a, b, alpha=1.0))
    xm, ym = fn(jax.random.key(1), x, y)
    xm2, _ = fn(jax.random.key(1), x, y)
    xm3, _ = fn(jax.random.key(2), x, y)
    np.testing.assert_array_equal(xm, xm2)
    self.assertFalse(np.array_equal(xm, xm3))
    self.assertEqual(xm.dtype, x.dtype)
    np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
    # Consistency with the drawn parameters (same key).
    lam, perm = sample_mixup_params(jax.random.key(1), 8, alpha=1.0)
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[perm], atol=1e-6)
    self.assertEqual(sorted(np.asarray(perm).tolist()), list(range(8)))

  def test_lambda_distribution_is_beta(self):
    from scipy import stats
    lam = sample_mixup_params(jax.random.key(0), 4000, alpha=0.4, per_example=True)[0]
    self.assertEqual(lam.shape, (4000,))
    self.assertGreater(stats.kstest(np.asarray(lam), stats.beta(0.4, 0.4).cdf).pvalue, 1e-3)
    self.assertEqual(sample_mixup_params(jax.random.key(1), 4, alpha=1.0)[0].shape, ())

  def test_bad_input(self):
    x = jnp.zeros((4, 2, 2, 1))
    with self.assertRaisesRegex(TypeError, "y must be"):
      mixup(jax.random.key(0), x, jnp.arange(4))
    with self.assertRaisesRegex(ValueError, "batch size"):
      mixup(jax.random.key(0), x, jnp.zeros((3, 2)))
    with self.assertRaisesRegex(ValueError, "alpha"):
      mixup(jax.random.key(0), x, jnp.full((4, 2), 0.5), alpha=0.0)
