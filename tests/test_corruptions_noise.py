"""Noise corruptions: sample statistics against the formulas they implement."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from drojax.corruptions import noise

# 8 images of 32x32x3 = 24,576 values per statistic.
_SHAPE = (8, 32, 32, 3)


def _const(v):
  return jnp.full(_SHAPE, v, jnp.float32)


class NoiseStatisticsTest(parameterized.TestCase):

  @parameterized.parameters(0.04, 0.1)
  def test_gaussian_std_and_mean(self, c):
    y = np.asarray(jax.jit(lambda k, x: noise.gaussian_noise(k, x, (c,)))(jax.random.key(0),
                                                                           _const(0.5)))
    d = y - 0.5  # 0.5 +- 5 sigma stays inside [0, 1]: no clipping
    n = d.size
    self.assertLess(abs(d.mean()), 4 * c / np.sqrt(n))
    self.assertLess(abs(d.std() / c - 1), 4 * np.sqrt(0.5 / n))

  @parameterized.parameters((0.3, 100.0), (0.5, 500.0), (0.05, 50.0))
  def test_shot_poisson_mean_and_variance(self, level, rate):
    y = np.asarray(jax.jit(lambda k, x: noise.shot_noise(k, x, (rate,)))(jax.random.key(1),
                                                                         _const(level)))
    counts = y * rate  # Poisson(level * rate), integers (clipping at 1 is far above the mean)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    lam = level * rate
    n = counts.size
    self.assertLess(abs(counts.mean() - lam), 4 * np.sqrt(lam / n))
    self.assertLess(abs(counts.var() / lam - 1), 4 * np.sqrt(2 / n) + 1 / lam)

  def test_shot_infinite_rate_is_identity(self):
    x = jnp.asarray(np.random.default_rng(0).uniform(size=_SHAPE), jnp.float32)
    np.testing.assert_array_equal(np.asarray(noise.shot_noise(jax.random.key(0), x, (np.inf,))),
                                  np.asarray(x))

  @parameterized.parameters(0.01, 0.07)
  def test_impulse_fraction_and_salt_pepper_split(self, amount):
    y = np.asarray(noise.impulse_noise(jax.random.key(2), _const(0.5), (amount,)))
    hit = y != 0.5
    n = y.size
    self.assertTrue(np.all(np.isin(y[hit], [0.0, 1.0])))
    self.assertLess(abs(hit.mean() - amount), 4 * np.sqrt(amount * (1 - amount) / n))
    salt = (y == 1.0).sum() / max(hit.sum(), 1)
    self.assertLess(abs(salt - 0.5), 4 * np.sqrt(0.25 / max(hit.sum(), 1)))
    # Channels are hit independently (scikit-image's per-value Bernoulli).
    both = np.mean(hit[..., 0] & hit[..., 1])
    self.assertLess(abs(both - amount ** 2), 4 * np.sqrt(amount ** 2 / (n / 3)) + 1e-4)

  @parameterized.parameters(0.06, 0.2)
  def test_speckle_multiplicative_std(self, c):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.uniform(0.2, 0.6, size=_SHAPE), jnp.float32)
    y = np.asarray(noise.speckle_noise(jax.random.key(3), x, (c,)))
    ratio = (y - np.asarray(x)) / np.asarray(x)  # N(0, c^2); x (1 + 5c) < 1, no clipping
    n = ratio.size
    self.assertLess(abs(ratio.mean()), 4 * c / np.sqrt(n))
    self.assertLess(abs(ratio.std() / c - 1), 4 * np.sqrt(0.5 / n))

  def test_noise_is_independent_across_examples(self):
    y = np.asarray(noise.gaussian_noise(jax.random.key(4), _const(0.5), (0.05,)))
    d = (y - 0.5).reshape(_SHAPE[0], -1)
    corr = np.corrcoef(d)
    off = corr[~np.eye(_SHAPE[0], dtype=bool)]
    self.assertLess(np.max(np.abs(off)), 4 / np.sqrt(d.shape[1]))
