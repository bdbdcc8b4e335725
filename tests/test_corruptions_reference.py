"""Deterministic corruptions against independent NumPy / SciPy / PIL / colorsys references."""

import colorsys
import io
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from PIL import Image
from scipy import ndimage

from drojax.corruptions import blur, digital, tables


def _u8_images(n=4, seed=0):
  """Real-looking uint8 images: smooth random fields with some texture."""
  rng = np.random.default_rng(seed)
  x = ndimage.gaussian_filter(rng.uniform(size=(n, 32, 32, 3)), (0, 2.5, 2.5, 0.7))
  x = (x - x.min()) / (x.max() - x.min())
  x = np.clip(0.85 * x + 0.15 * rng.uniform(size=x.shape), 0, 1)
  return np.round(x * 255).astype(np.uint8)


def _f(u8):
  return jnp.asarray(u8.astype(np.float32) / 255.0)


class DeterministicTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_contrast(self):
    u8 = _u8_images()
    x = u8 / 255.0
    fn = self.variant(lambda im: digital.contrast(None, im, (0.4,)))
    got = np.asarray(fn(_f(u8)))
    m = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, np.clip((x - m) * 0.4 + m, 0, 1), atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_brightness_and_saturate_vs_colorsys(self):
    u8 = _u8_images(2)
    u8[0, :4, :4] = 128  # gray pixels: hue 0, saturation 0
    u8[0, 4, :3] = [200, 200, 10]  # ties for the maximum
    x = u8 / 255.0

    def ref(fn):
      out = np.empty_like(x)
      for idx in np.ndindex(*x.shape[:3]):
        h, s, v = colorsys.rgb_to_hsv(*x[idx])
        out[idx] = colorsys.hsv_to_rgb(*fn(h, s, v))
      return np.clip(out, 0, 1)

    bright = self.variant(lambda im: digital.brightness(None, im, (0.2,)))
    np.testing.assert_allclose(np.asarray(bright(_f(u8))),
                               ref(lambda h, s, v: (h, s, min(v + 0.2, 1.0))), atol=2e-6)
    sat = self.variant(lambda im: digital.saturate(None, im, (2.0, 0.1)))
    np.testing.assert_allclose(np.asarray(sat(_f(u8))),
                               ref(lambda h, s, v: (h, min(max(s * 2.0 + 0.1, 0), 1), v)),
                               atol=2e-6)

  @parameterized.parameters(0.95, 0.9, 0.85, 0.75, 0.65, 0.43, 0.35)
  def test_pixelate_vs_pil_box(self, c):
    u8 = _u8_images()
    ref = []
    for im in u8:
      small = Image.fromarray(im).resize((int(32 * c), int(32 * c)), Image.BOX)
      ref.append(np.asarray(small.resize((32, 32), Image.BOX)))
    ref = np.stack(ref).astype(np.float64)
    got = np.asarray(jax.jit(lambda im: digital.pixelate(None, im, (c,)))(_f(u8))) * 255
    np.testing.assert_array_equal(np.round(got), ref)  # bit-exact, PIL's rounding included
    np.testing.assert_allclose(got, np.round(got), atol=1e-4)

  @parameterized.parameters((0.3, 0.4), (1.0, 0.2), (1.5, 0.1), (0.89, 1.8))
  def test_defocus_vs_numpy_disk_and_scipy(self, radius, alias):
    u8 = _u8_images(2)
    x = u8 / 255.0
    # The reference kernel on its 17x17 grid, anti-aliased by a 3x3 Gaussian.
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias ** 2))
    g /= g.sum()
    kernel = ndimage.correlate(disk, np.outer(g, g), mode="mirror")
    ref = np.stack([np.stack([ndimage.correlate(im[..., ch], kernel, mode="mirror")
                              for ch in range(3)], -1) for im in x])
    got = np.asarray(blur.defocus_blur(None, _f(u8), (radius, alias)))
    np.testing.assert_allclose(got, np.clip(ref, 0, 1), atol=2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gaussian_blur_vs_scipy(self):
    u8 = _u8_images(2)
    for sigma in (0.4, 1.0):
      ref = ndimage.gaussian_filter(u8 / 255.0, (0, sigma, sigma, 0), mode="nearest", truncate=4)
      got = self.variant(lambda im: blur.gaussian_blur(None, im, (sigma,)))(_f(u8))
      np.testing.assert_allclose(np.asarray(got), ref, atol=2e-6)

  @parameterized.parameters(1.06, 1.11, 1.26, 1.7)
  def test_zoom_blur_vs_scipy_clipped_zoom(self, max_zoom):
    u8 = _u8_images(2)
    x = u8 / 255.0

    def clipped_zoom(img, z):
      h = img.shape[0]
      ch = int(np.ceil(h / z))
      top = (h - ch) // 2
      out = ndimage.zoom(img[top:top + ch, top:top + ch], (z, z, 1), order=1)
      trim = (out.shape[0] - h) // 2
      return out[trim:trim + h, trim:trim + h]

    factors = np.arange(1, max_zoom, 0.01)
    ref = np.stack([(im + sum(clipped_zoom(im, z) for z in factors)) / (len(factors) + 1)
                    for im in x])
    got = np.asarray(blur.zoom_blur(None, _f(u8), (max_zoom,)))
    np.testing.assert_allclose(got, np.clip(ref, 0, 1), atol=2e-6)

  @parameterized.parameters(95, 80, 65, 58, 50, 40, 10, 1)
  def test_jpeg_vs_pil(self, quality):
    u8 = _u8_images(6)
    ref = []
    for im in u8:
      buf = io.BytesIO()
      Image.fromarray(im).save(buf, "JPEG", quality=quality)
      ref.append(np.asarray(Image.open(buf)))
    ref = np.stack(ref).astype(np.float64)
    got = np.asarray(jax.jit(lambda im: digital.jpeg_compression(None, im, (quality,)))(_f(u8)))
    got = got * 255
    np.testing.assert_allclose(got, np.round(got), atol=1e-3)  # 8-bit output
    # Bit-exact: libjpeg's islow integer DCT, rounding and fixed-point colour conversion.
    np.testing.assert_array_equal(np.round(got), ref)

  def test_jpeg_quant_tables_ijg(self):
    # Independent: the IJG formula on the Annex K luminance table's first row.
    base = np.array([16, 11, 10, 16, 24, 40, 51, 61])
    for q in (5, 40, 50, 80, 100):
      scale = 5000 // q if q < 50 else 200 - 2 * q
      expect = np.clip((base * scale + 50) // 100, 1, 255)
      luma, _ = digital.jpeg_quant_tables(q)
      np.testing.assert_array_equal(np.asarray(luma)[0], expect)

  def test_motion_blur_kernel_vs_numpy_loop(self):
    u8 = _u8_images(3)
    x = u8 / 255.0
    radius, sigma = 6.0, 2.0
    angles = np.array([-40.0, 0.0, 33.0])
    width = 2 * math.ceil(radius) + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    k /= k.sum()
    ref = np.zeros_like(x)
    for n, a in enumerate(angles):
      for i in range(width):
        dx = math.ceil(i * math.cos(math.radians(a)) - 0.5)
        dy = math.ceil(i * math.sin(math.radians(a)) - 0.5)
        rows = np.clip(np.arange(32) + dy, 0, 31)
        cols = np.clip(np.arange(32) + dx, 0, 31)
        ref[n] += k[i] * x[n][rows][:, cols]
    got = blur.motion_blur_angle(_f(u8), blur.motion_taps(radius, sigma), jnp.asarray(angles))
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-6)

  def test_glass_blur_sweep_moves_pixels_from_up_left_neighbours(self):
    # With sigma 0 the standard glass blur only copies pixels: each pixel in rows/cols 2..31
    # comes from itself or its up / left / up-left neighbour after each sweep; rows and
    # columns 0 and 1 never change.
    u8 = _u8_images(2)
    x = u8 / 255.0
    fn = jax.jit(lambda k, im: blur.glass_blur(k, im, (0.0, 1.0, 1.0)))
    got = np.asarray(fn(jax.random.key(0), _f(u8)))
    floored = np.floor(x * 255 + 1e-4) / 255
    np.testing.assert_allclose(got[:, :2], floored[:, :2], atol=1e-6)
    np.testing.assert_allclose(got[:, :, :2], floored[:, :, :2], atol=1e-6)
    for n in range(2):
      for h in range(2, 32):
        for w in range(2, 32):
          cands = [floored[n, h + dy, w + dx] for dy in (-1, 0) for dx in (-1, 0)]
          assert min(np.max(np.abs(got[n, h, w] - c)) for c in cands) < 1e-6
    moved = np.mean(np.any(np.abs(got - floored) > 1e-6, axis=-1)[:, 2:, 2:])
    # 3 of 4 offsets move a pixel; equal neighbours hide a few moves.
    self.assertGreater(moved, 0.5)
    self.assertLess(moved, 0.76)

  def test_elastic_without_displacement_is_identity(self):
    u8 = _u8_images(2)
    fn = jax.jit(lambda k, im: digital.elastic_transform(k, im, (0.0, 0.0, 0.0)))
    got = fn(jax.random.key(0), _f(u8))
    np.testing.assert_allclose(np.asarray(got), u8 / 255.0, atol=1e-5)

  def test_elastic_smoothing_matches_scipy_reflect(self):
    from drojax.corruptions import _common
    rng = np.random.default_rng(1)
    field = rng.uniform(-1, 1, size=(2, 32, 32))
    sigma = 6.4
    taps = _common.gaussian_taps_truncated(sigma, 3.0, 8.0)
    got = _common.separable_filter(jnp.asarray(field, jnp.float32), taps, taps, mode="symmetric")
    ref = np.stack([ndimage.gaussian_filter(f, sigma, mode="reflect", truncate=3) for f in field])
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-6)


def test_refined_tables_shapes():
  for name in tables.STANDARD_NAMES:
    assert len(tables.rows(name, "refined")[0]) == len(tables.rows(name, "refined_cifar100")[0])
  with pytest.raises(ValueError, match="table"):
    tables.rows("fog", "imagenet")
