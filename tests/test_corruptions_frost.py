"""Frost: the reference's texture resize, user texture folders, and the procedural texture's
statistics against the reference maker's frost outputs (``shared/reference``)."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from _shared_data import SHARED_DATA
from drojax import corruptions
from drojax.corruptions import tables, weather
from drojax.corruptions.textures import FrostTextures, load_frost_textures, resize_bilinear_u8

REFERENCE = SHARED_DATA.parent / "reference" / "frost_reference_first200.npz"


def _bilinear_f64(image, scale):
  """Plain bilinear resampling, float64, one output pixel at a time: output pixel ``d`` reads
  the source at ``(d + 0.5) / scale - 0.5`` (pixel centres), neighbours clamped at the border,
  no antialiasing; rounded to 8 bits."""
  h, w, c = image.shape
  oh, ow = int(round(h * scale)), int(round(w * scale))
  src = image.astype(np.float64)
  out = np.empty((oh, ow, c))
  for i in range(oh):
    y = min(max((i + 0.5) / scale - 0.5, 0.0), h - 1.0)
    y0 = int(np.floor(y))
    y1, fy = min(y0 + 1, h - 1), y - y0
    for j in range(ow):
      x = min(max((j + 0.5) / scale - 0.5, 0.0), w - 1.0)
      x0 = int(np.floor(x))
      x1, fx = min(x0 + 1, w - 1), x - x0
      out[i, j] = ((1 - fy) * ((1 - fx) * src[y0, x0] + fx * src[y0, x1])
                   + fy * ((1 - fx) * src[y1, x0] + fx * src[y1, x1]))
  return np.floor(out + 0.5)


@pytest.mark.parametrize("scale", [0.2, 0.37, 1.6])
def test_resize_matches_float64_plain_bilinear(scale):
  image = np.random.default_rng(0).integers(0, 256, (53, 67, 3), np.uint8)
  got = resize_bilinear_u8(image, scale)
  ref = _bilinear_f64(image, scale)
  assert got.shape == ref.shape and got.dtype == np.uint8
  diff = np.abs(got - ref)
  if scale == 0.2:
    # The reference's shrink samples pixel centres 2, 7, 12, ... exactly: no averaging at all.
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, image[2::5, 2::5][:got.shape[0], :got.shape[1]])
  else:
    # OpenCV's 11-bit weights and its rounding leave at most one level.
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.8


def test_resize_rejects_bad_input():
  with pytest.raises(ValueError, match="uint8"):
    resize_bilinear_u8(np.zeros((4, 4, 3)), 0.5)
  with pytest.raises(ValueError, match="scale"):
    resize_bilinear_u8(np.zeros((4, 4, 3), np.uint8), 0.0)


def _write(path, array):
  Image.fromarray(array).save(path)
  return array


def test_load_frost_textures_resizes_as_the_reference(tmp_path):
  rng = np.random.default_rng(1)
  a = _write(tmp_path / "frost1.png", rng.integers(0, 256, (203, 251, 3), np.uint8))
  b = _write(tmp_path / "frost2.bmp", rng.integers(0, 256, (170, 320, 3), np.uint8))
  rgba = rng.integers(0, 256, (180, 180, 4), np.uint8)
  _write(tmp_path / "frost3.png", rgba)
  (tmp_path / "notes.txt").write_text("not an image")
  tex = load_frost_textures(str(tmp_path))
  assert isinstance(tex, FrostTextures)
  np.testing.assert_array_equal(tex.sizes, [[41, 50], [34, 64], [36, 36]])  # round(side / 5)
  assert tex.images.shape == (3, 41, 64, 3) and tex.images.dtype == np.float32
  for t, src in enumerate([a, b, rgba[..., :3]]):  # alpha is dropped, as cv2.imread does
    h, w = tex.sizes[t]
    np.testing.assert_array_equal(np.round(tex.images[t, :h, :w] * 255),
                                  src[2::5, 2::5][:h, :w])
    assert not tex.images[t, h:].any() and not tex.images[t, :, w:].any()


def test_load_frost_textures_errors(tmp_path):
  with pytest.raises(ValueError, match="directory"):
    load_frost_textures(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="holds no images"):
    load_frost_textures(str(tmp_path))
  _write(tmp_path / "small.png", np.zeros((150, 400, 3), np.uint8))
  with pytest.raises(ValueError, match="'small.png'.* is 30x80"):
    load_frost_textures(str(tmp_path))
  Image.fromarray(np.zeros((200, 200), np.uint16)).save(tmp_path / "small.png")  # 16-bit
  with pytest.raises(ValueError, match="8-bit"):
    load_frost_textures(str(tmp_path))


def test_frost_crops_each_texture_inside_its_own_size():
  # Texture t is constant 0.2 (t + 1) inside its size and 1.0 in the padding: a crop that
  # touched the padding, or mixed textures, would show.
  sizes = np.array([[32, 32], [40, 33], [33, 70]], np.int32)
  images = np.ones((3, 40, 70, 3), np.float32)
  for t, (h, w) in enumerate(sizes):
    images[t, :h, :w] = 0.2 * (t + 1)
  x = jnp.zeros((64, 32, 32, 3))
  fn = jax.jit(lambda k, x, tex: corruptions.corrupt(k, x, name="frost", severity=5,
                                                     frost_textures=tex))
  out = np.asarray(fn(jax.random.key(0), x, FrostTextures(images, sizes)))
  _, b = tables.rows("frost")[4]
  values = out.reshape(64, -1)
  assert np.all(values.min(axis=1) == values.max(axis=1))  # one texture, no padding
  picked = np.round(values[:, 0] / b / 0.2).astype(int) - 1
  assert set(picked) == {0, 1, 2}
  np.testing.assert_allclose(values[:, 0], b * 0.2 * (picked + 1), atol=1e-6)
  with pytest.raises(ValueError, match="only for name='frost'"):
    corruptions.corrupt(jax.random.key(0), x, name="fog", severity=1,
                        frost_textures=FrostTextures(images, sizes))
  with pytest.raises(ValueError, match="at least as large"):
    corruptions.corrupt(jax.random.key(0), jnp.zeros((1, 48, 48, 3)), name="frost", severity=1,
                        frost_textures=FrostTextures(images, sizes))


# ----------------------------------------------------------- statistics against the reference

FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # the maker's table


def _mean_abs_laplacian(y):
  """Mean |4-neighbour Laplacian| over interior pixels and channels (levels)."""
  lap = (4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2]
         - y[:, 1:-1, 2:])
  return float(np.mean(np.abs(lap)))


@functools.lru_cache(maxsize=1)
def _procedural(n):
  keys = jax.random.split(jax.random.key(7), n)
  fn = jax.jit(jax.vmap(lambda k: weather.procedural_frost(k, 32, 32)))
  return np.asarray(fn(keys), np.float64)


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference frost outputs not found at "
                    f"{REFERENCE} (workplace data, not in the repository)")
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_procedural_frost_matches_reference_statistics(severity):
  with np.load(REFERENCE) as f:
    clean = f["clean"].astype(np.float64)
    ref = f[f"frost_{severity}"].astype(np.float64)
  n = clean.shape[0]
  tex = _procedural(5 * n)[(severity - 1) * n:severity * n]  # fresh textures per severity
  assert tex.shape == (n, 32, 32, 3) and tex.min() >= 0.0 and tex.max() <= 1.0
  a, b = FROST[severity - 1]
  # frost() is clip(a x + b F) (tested against its formula in test_corruptions_api); stored as
  # the maker stores it, np.uint8 of 0..255 values.
  ours = np.floor(np.clip(a * clean / 255 + b * tex, 0, 1) * 255)
  for name, stat in [
      ("output |Laplacian|", lambda o: _mean_abs_laplacian(o)),
      ("frost-layer |Laplacian|", lambda o: _mean_abs_laplacian(o - a * clean)),
      ("frost-layer mean", lambda o: float(np.mean(o - a * clean))),
      ("frost-layer contrast", lambda o: float(np.mean(np.std(o - a * clean, axis=(1, 2, 3))))),
  ]:
    got, want = stat(ours), stat(ref)
    assert abs(got / want - 1) < 0.1, f"{name} at severity {severity}: {got:.2f} vs {want:.2f}"


def test_frost_dir_is_validated(tmp_path):
  from experiments import cli
  from experiments.overrides import apply_overrides
  from experiments import train as xtrain
  from experiments.configs import cifar_c as cifar_c_config

  c = cifar_c_config.make_config("erm", preset="quick", dataset="cifar10")  # nothing is loaded
  apply_overrides(c, [("eval.frost_dir", str(tmp_path / "nope"))])
  with pytest.raises(cli.UsageError, match="eval.frost_dir: .*directory"):
    xtrain.validate(c, num_devices=1)
  _write(tmp_path / "frost1.png", np.zeros((200, 200, 3), np.uint8))
  apply_overrides(c, [("eval.frost_dir", str(tmp_path))])
  xtrain.validate(c, num_devices=1)
  apply_overrides(c, [("eval.corruptions", "published")])
  with pytest.raises(cli.UsageError, match="--config.eval.frost_dir: applies to generated"):
    xtrain.validate(c, num_devices=1)


def test_evaluate_records_frost_textures(tmp_path):
  from drojax import evaluate as ev

  _write(tmp_path / "frost1.png", np.full((200, 200, 3), 255, np.uint8))
  f = lambda x: jnp.stack([0.5 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 0.5], -1)
  x = np.zeros((4, 32, 32, 3), np.uint8)  # black: class 0; white frost at 0.45 keeps class 0
  kw = dict(corruption_names=["frost"], severities=[5], batch_size=4)
  r = ev.evaluate(f, x, np.zeros(4, int), config=ev.EvalConfig(frost_dir=str(tmp_path), **kw),
                  progress=False)
  assert r["frost_textures"] == {"dir": str(tmp_path), "files": ["frost1.png"], "scale": 0.2}
  assert r["corruption_accuracy"] == {"frost": {"5": 1.0}}
  kw["corruption_names"] = ["contrast"]
  assert ev.evaluate(f, x, np.zeros(4, int), config=ev.EvalConfig(**kw),
                     progress=False)["frost_textures"] == "procedural"
  with pytest.raises(ValueError, match="at least as large as the images"):
    ev.evaluate(f, np.zeros((2, 48, 48, 3), np.uint8), np.zeros(2, int),
                config=ev.EvalConfig(frost_dir=str(tmp_path), **kw), progress=False)
  with pytest.raises(ValueError, match="frost_dir applies to generated"):
    ev.EvalConfig(corruptions=None, frost_dir=str(tmp_path), **kw)


def _fidelity_module():
  import importlib.util

  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "corruption_fidelity.py"
  spec = importlib.util.spec_from_file_location("corruption_fidelity", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_fidelity_frequency_statistics_vs_direct_sums():
  fid = _fidelity_module()
  y = np.random.default_rng(3).uniform(0, 255, (2, 8, 10, 3))
  # Direct DFT sum: P(u, v) = |sum_xy z(x, y) exp(-2 pi i (u x / H + v y / W))|^2 / (H W).
  h, w = 8, 10
  hann = lambda n: 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))
  total = 0.0
  for img in y:
    for c in range(3):
      z = (img[..., c] - img[..., c].mean()) * np.outer(hann(h), hann(w))
      for u in range(h):
        for v in range(w):
          fu, fv = (u if u < h / 2 else u - h) / h, (v if v < w / 2 else v - w) / w
          if np.hypot(fu, fv) >= 0.25:
            e = np.exp(-2j * np.pi * (u * np.arange(h)[:, None] / h + v * np.arange(w) / w))
            total += abs(np.sum(z * e)) ** 2 / (h * w)
  # The statistic is the mean over images and channels.
  assert fid.high_frequency_power(y) == pytest.approx(total / 6, rel=1e-10)
  checker = np.indices((6, 6)).sum(0) % 2 * 10.0
  checker = np.broadcast_to(checker[None, ..., None], (1, 6, 6, 3))
  assert fid.mean_abs_laplacian(checker) == 40.0  # 4 x 10
  assert fid.high_frequency_power(np.full((1, 8, 8, 3), 7.0)) == 0.0
