"""Tests for drojax.data.published_c: the Hendrycks .npy folder layout and tfds cifar10_corrupted."""

import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from drojax.data import published_c
from drojax.data.errors import DataNotFoundError

N = 4  # images per severity in the fake folders


def _write_folder(root, names=("fog", "glass_blur"), n=N, labels_len=None, num_classes=10):
  """A tiny published-style folder: row r of <name>.npy is filled with the value r (mod 256)."""
  os.makedirs(root, exist_ok=True)
  total = 5 * n
  for name in names:
    imgs = np.broadcast_to((np.arange(total) % 256).astype(np.uint8)[:, None, None, None],
                           (total, 4, 4, 3)).copy()
    np.save(os.path.join(root, f"{name}.npy"), imgs)
  base = np.arange(n) % num_classes
  labels = np.tile(base, 5) if labels_len is None else base[:labels_len]
  np.save(os.path.join(root, "labels.npy"), labels.astype(np.int64))
  return root


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_folder_rows_are_ordered_by_severity(tmp_path, severity):
  root = _write_folder(str(tmp_path / "CIFAR-10-C"))
  x, y = published_c.load_folder(root, "fog", severity)
  assert x.shape == (N, 4, 4, 3) and x.dtype == np.uint8
  # Severity s holds rows (s-1)*N .. s*N-1 of the file.
  np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange((severity - 1) * N, severity * N))
  np.testing.assert_array_equal(y, np.arange(N) % 10)


def test_folder_parent_and_short_labels(tmp_path):
  _write_folder(str(tmp_path / "CIFAR-100-C"), labels_len=N, num_classes=100)
  x, y = published_c.load_folder(str(tmp_path), "glass_blur", 2, dataset="cifar100")
  np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(N, 2 * N))
  np.testing.assert_array_equal(y, np.arange(N))
  loader = published_c.make_loader("cifar100", data_dir=str(tmp_path))
  np.testing.assert_array_equal(loader("glass_blur", 2)[0], x)


def test_make_loader_folder_with_evaluate(tmp_path):
  """The published loader feeds drojax.evaluate; accuracy by hand from the known pixel values."""
  import jax.numpy as jnp

  from drojax import evaluate

  root = _write_folder(str(tmp_path / "c"))
  loader = published_c.make_loader("cifar10", folder=root)
  # Ten outputs (the labels are 0..9); predicts class 0 when the (constant) pixel value is
  # below 10/255, else class 1.
  f = lambda x: jnp.concatenate([
      jnp.stack([10 / 255 - x.mean((1, 2, 3)), x.mean((1, 2, 3)) - 10 / 255], -1),
      jnp.full((x.shape[0], 8), -1e3)], -1)
  acc = evaluate.published_corruption_accuracy(f, loader, names=["fog"], severities=[1, 2, 3],
                                               batch_size=4, progress=False)
  labels = np.arange(N) % 10
  for s in (1, 2, 3):
    rows = np.arange((s - 1) * N, s * N)
    ref = np.mean(np.where(rows < 10, 0, 1) == labels)
    assert acc["fog"][str(s)] == pytest.approx(ref)


def test_missing_data_is_a_clear_fast_error(tmp_path):
  t0 = time.perf_counter()
  with pytest.raises(DataNotFoundError) as e:
    published_c.make_loader("cifar10", folder=str(tmp_path / "nowhere"),
                            data_dir=str(tmp_path / "tfds"))
  msg = str(e.value)
  assert "CIFAR-10-C" in msg and "nowhere" in msg and "zenodo" in msg and "--data_dir" in msg
  assert time.perf_counter() - t0 < 2.0  # no retry loop, no download attempt
  with pytest.raises(DataNotFoundError, match="CIFAR-100-C"):
    published_c.make_loader("cifar100", data_dir=str(tmp_path))
  root = _write_folder(str(tmp_path / "partial"), names=("fog",))
  with pytest.raises(DataNotFoundError, match=r"snow\.npy.*\['fog'\]|\['fog'\].*snow\.npy"):
    published_c.load_folder(root, "snow", 1)


def test_malformed_files(tmp_path):
  root = _write_folder(str(tmp_path / "bad"))
  np.save(os.path.join(root, "fog.npy"), np.zeros((7, 4, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="5 severities"):
    published_c.load_folder(root, "fog", 1)
  np.save(os.path.join(root, "fog.npy"), np.zeros((10, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match="uint8"):
    published_c.load_folder(root, "fog", 1)
  _write_folder(root, num_classes=10)
  np.save(os.path.join(root, "labels.npy"), np.full(5 * N, 12))
  with pytest.raises(ValueError, match=r"0\.\.9"):
    published_c.load_folder(root, "fog", 1)
  np.save(os.path.join(root, "labels.npy"), np.array([{"a": 1}] * (5 * N), dtype=object))
  with pytest.raises(ValueError, match="labels.npy"):
    published_c.load_folder(root, "fog", 1)  # never unpickles
  with pytest.raises(ValueError, match="severity"):
    published_c.load_folder(root, "fog", 6)
  with pytest.raises(ValueError, match="corruption name"):
    published_c.load_folder(root, "fogg", 1)


@pytest.mark.parametrize("name,config", [("glass_blur", "frosted_glass_blur_2"),
                                         ("elastic_transform", "elastic_5"), ("fog", "fog_1")])
def test_tfds_config_names(name, config):
  sev = int(config.rsplit("_", 1)[1])
  assert published_c.tfds_config(name, sev) == config
  # ...and tfds's builder really has that config.
  builder_cls = tfds.builder_cls("cifar10_corrupted")
  assert config in {c.name for c in builder_cls.BUILDER_CONFIGS}


def test_tfds_path_with_mock_data(tmp_path):
  data_dir = tmp_path / "tfds"
  with pytest.raises(DataNotFoundError, match="cifar10_corrupted/frosted_glass_blur_2"):
    published_c.load_tfds("glass_blur", 2, data_dir=str(data_dir))
  # What a prepared dataset leaves on disk (the check before tfds is called)...
  for cfg in ("frosted_glass_blur_2", "gaussian_noise_1"):
    d = data_dir / "cifar10_corrupted" / cfg / "1.0.0"
    d.mkdir(parents=True)
    (d / "dataset_info.json").write_text("{}")
  # ...then tfds's own mock stands in for the ArrayRecord files.
  with tfds.testing.mock_data(num_examples=6):
    x, y = published_c.load_tfds("glass_blur", 2, data_dir=str(data_dir))
    loader = published_c.make_loader("cifar10", data_dir=str(data_dir))
    x2, _ = loader("glass_blur", 2)
  assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8
  assert y.shape == (6,) and y.min() >= 0 and y.max() < 10
  assert x2.shape == (6, 32, 32, 3)


def test_write_folder_round_trips_through_the_loader(tmp_path):
  import jax

  from drojax import corruptions

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  labels = np.array([2, 0, 1])
  folder = str(tmp_path / "made")
  key = jax.random.key(5)
  published_c.write_folder(folder, images, labels, key=key, names=("contrast",),
                           batch_size=2)
  assert sorted(os.listdir(folder)) == ["README.txt", "contrast.npy", "labels.npy"]
  got, got_labels = published_c.make_loader("cifar10", folder=folder)("contrast", 3)
  np.testing.assert_array_equal(got_labels, labels)
  k = jax.random.fold_in(jax.random.fold_in(key, 0), 3)
  x = images.astype(np.float32) / 255
  want = np.concatenate([np.asarray(corruptions.corrupt(jax.random.fold_in(k, b), x[s:s + 2],
                                                        name="contrast", severity=3))
                         for b, s in enumerate((0, 2))])
  want = np.clip(np.rint(want * 255), 0, 255)
  assert got.dtype == np.uint8 and np.abs(got.astype(int) - want).max() <= 1  # jit vs eager
  # A complete folder is kept as it is; no temporary folder is left behind.
  os.remove(os.path.join(folder, "README.txt"))
  published_c.write_folder(folder, images, labels, key=key, names=("contrast",))
  assert "README.txt" not in os.listdir(folder) and os.listdir(tmp_path) == ["made"]
