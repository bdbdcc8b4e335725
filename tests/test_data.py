"""Tests for drojax.data: arrays, batching, npz/idx/digits/Waterbirds loaders, prefetch, sharding."""

import gzip
import os
import struct
import threading

import jax
import numpy as np
import pytest
from PIL import Image

from drojax import data
from drojax.data import arrays, fashion_mnist, images as images_lib, registry, waterbirds

from _shared_data import SHARED_DATA

SHARED = str(SHARED_DATA)


def _toy(n=10, hw=4, classes=3, groups=False):
  rng = np.random.default_rng(0)
  return data.ArrayDataset.create(
      rng.integers(0, 256, (n, hw, hw, 3), dtype=np.uint8), np.arange(n) % classes,
      num_classes=classes, ids=np.arange(100, 100 + n),
      groups=(np.arange(n) % 4) if groups else None)


# ---------------------------------------------------------------- ArrayDataset / epoch_batches

def test_epoch_batches_is_a_permutation_without_repeats():
  ds = _toy(n=10)
  batches = list(data.epoch_batches(ds, batch_size=3, seed=1, epoch=0, drop_remainder=False))
  assert [len(b["id"]) for b in batches] == [3, 3, 3, 1]
  ids = np.concatenate([b["id"] for b in batches])
  assert sorted(ids.tolist()) == list(range(100, 110))
  for b in batches:  # image/label follow the id
    rows = b["id"] - 100
    np.testing.assert_array_equal(b["image"], ds.images[rows])
    np.testing.assert_array_equal(b["label"], ds.labels[rows])
    assert b["image"].dtype == np.uint8 and b["label"].dtype == np.int32
    assert b["id"].dtype == np.int32


def test_epoch_batches_deterministic_and_resumable():
  ds = _toy(n=20)
  run = lambda epoch, start=0, seed=3: [
      b["id"].tolist() for b in data.epoch_batches(ds, batch_size=4, seed=seed, epoch=epoch,
                                                   start_batch=start)]
  full = run(2)
  assert full == run(2)
  assert run(2, start=3) == full[3:]  # a resumed epoch continues exactly where it stopped
  assert run(3) != full  # another epoch, another order
  assert run(2, seed=4) != full
  assert len(full) == 5


def test_epoch_batches_shards_partition_the_global_batch():
  ds = _toy(n=16, groups=True)
  whole = list(data.epoch_batches(ds, batch_size=8, seed=0, epoch=1))
  parts = [list(data.epoch_batches(ds, batch_size=8, seed=0, epoch=1, shard_index=i,
                                   num_shards=2)) for i in range(2)]
  for b, p0, p1 in zip(whole, *parts):
    np.testing.assert_array_equal(np.concatenate([p0["id"], p1["id"]]), b["id"])
    np.testing.assert_array_equal(b["group"], ds.groups[b["id"] - 100])


def test_unshuffled_order_and_num_batches():
  ds = _toy(n=7)
  ids = [b["id"].tolist() for b in data.epoch_batches(ds, batch_size=3, seed=0, epoch=0,
                                                       shuffle=False, drop_remainder=False)]
  assert ids == [[100, 101, 102], [103, 104, 105], [106]]
  assert data.num_batches(7, 3) == 2 and data.num_batches(7, 3, drop_remainder=False) == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=3, num_shards=2), "not divisible"),
    (dict(batch_size=2, start_batch=-1), "start_batch"),
])
def test_epoch_batches_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    list(data.epoch_batches(_toy(), seed=0, epoch=0, **kwargs))


@pytest.mark.parametrize("images, labels, match", [
    (np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, int), "uint8"),
    (np.zeros((2, 4, 4), np.uint8), np.zeros(2, int), r"\[N, H, W, C\]"),
    (np.zeros((2, 4, 4, 3), np.uint8), np.zeros(3, int), "labels must have shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 5]), r"\[0, 3\)"),
    (np.zeros((2, 4, 4, 3), np.uint8), np.array([0.0, 1.0]), "integers"),
])
def test_array_dataset_validation(images, labels, match):
  with pytest.raises((ValueError, TypeError), match=match):
    data.ArrayDataset.create(images, labels, num_classes=3, name="toy")


def test_balanced_indices_are_balanced_fixed_and_checked():
  labels = np.repeat(np.arange(10), 30)[np.random.default_rng(0).permutation(300)]
  idx = data.balanced_indices(labels, 50, seed=3)
  assert len(idx) == 50 and len(set(idx)) == 50 and list(idx) == sorted(idx)
  assert np.bincount(labels[idx], minlength=10).tolist() == [5] * 10
  np.testing.assert_array_equal(idx, data.balanced_indices(labels, 50, seed=3))
  with pytest.raises(ValueError, match="fewer than"):
    data.balanced_indices(labels, 5, seed=0)


def test_subset_is_fixed_and_keeps_ids():
  ds = _toy(n=10)
  a, b = ds.subset(4, seed=1), ds.subset(4, seed=1)
  np.testing.assert_array_equal(a.ids, b.ids)
  np.testing.assert_array_equal(a.images, ds.images[a.ids - 100])
  assert ds.subset(None) is ds


# ---------------------------------------------------------------- npz

def test_load_npz_roundtrip_and_int64_labels(tmp_path):
  rng = np.random.default_rng(1)
  imgs = rng.integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)
  path = tmp_path / "a.npz"
  np.savez(path, images=imgs, labels=np.array([0, 1, 2, 1, 0], np.int64))
  ds = data.load_npz(str(path))
  np.testing.assert_array_equal(ds.images, imgs)
  assert ds.labels.dtype == np.int32 and ds.num_classes == 3


def _write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize("make, match", [
    (lambda p: _write(p, pictures=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(2)),
     r"missing key\(s\) \['images'\]"),
    (lambda p: _write(p, images=np.zeros((2, 4, 4, 3), np.float32), labels=np.zeros(2, int)),
     "uint8"),
    (lambda p: _write(p, images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(3, int)),
     "labels must have shape"),
    (lambda p: _write(p, images=np.zeros((2, 4, 4, 3), np.uint8),
                      labels=np.array([0, -1])), "labels must lie"),
    (lambda p: _write(p, images=np.zeros((2, 4, 4, 3), np.uint8),
                      labels=np.array([object(), 1], dtype=object)), "pickle"),
])
def test_load_npz_malformed_files_name_file_and_problem(tmp_path, make, match):
  path = make(tmp_path / "bad.npz")
  with pytest.raises(ValueError, match=match) as info:
    data.load_npz(path)
  assert str(tmp_path / "bad.npz") in str(info.value)


def test_load_npz_truncated_and_missing(tmp_path):
  path = tmp_path / "t.npz"
  np.savez(path, images=np.zeros((50, 8, 8, 3), np.uint8), labels=np.zeros(50, int))
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(ValueError, match=str(path)):
    data.load_npz(str(path))
  with pytest.raises(ValueError, match="no such file"):
    data.load_npz(str(tmp_path / "nope.npz"))


def test_npz_dataset_names_and_split_paths(tmp_path):
  _write(tmp_path / "x_train.npz", images=np.zeros((3, 4, 4, 3), np.uint8),
         labels=np.array([0, 1, 1]))
  ds = data.load_dataset(f"npz:{tmp_path}/x_train.npz", "train")
  assert len(ds) == 3
  with pytest.raises(data.DataNotFoundError, match="x_test.npz"):
    data.load_dataset(f"npz:{tmp_path}/x_train.npz", "test")
  assert registry.npz_split_path(str(tmp_path), "test") == str(tmp_path / "test.npz")


def test_unknown_dataset_suggests():
  with pytest.raises(ValueError, match="Did you mean 'cifar10'"):
    data.load_dataset("cifar1O", "train")


# ---------------------------------------------------------------- resizing and digits

def _bilinear_reference(img, size):
  """Half-pixel-centre bilinear upsampling with edge clamping, float64 (PIL's upscaling rule)."""
  h, w = img.shape
  def coords(n_out, n_in):
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, x - lo
  ylo, yhi, fy = coords(size, h)
  xlo, xhi, fx = coords(size, w)
  img = img.astype(np.float64)
  top = img[ylo][:, xlo] * (1 - fx) + img[ylo][:, xhi] * fx
  bot = img[yhi][:, xlo] * (1 - fx) + img[yhi][:, xhi] * fx
  return top * (1 - fy[:, None]) + bot * fy[:, None]


def test_resize_matches_float64_bilinear_and_repeats_channels():
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
  out = images_lib.resize_uint8(img, 32, channels=3)
  assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
  for i in range(3):
    ref = _bilinear_reference(img[i, ..., 0], 32)
    np.testing.assert_allclose(out[i, ..., 0], ref, atol=1.01)
    np.testing.assert_array_equal(out[i, ..., 0], out[i, ..., 2])


def test_digits_is_real_bundled_data_with_a_fixed_disjoint_split():
  from sklearn.datasets import load_digits as sk

  raw = sk()
  train, test = data.load_digits("train"), data.load_digits("test")
  assert train.image_shape == (32, 32, 3) and train.num_classes == 10
  assert len(train) + len(test) == 1797
  assert not set(train.ids.tolist()) & set(test.ids.tolist())
  np.testing.assert_array_equal(test.labels, raw.target[test.ids])
  # Every class is in both splits (stratified), and the split does not change between calls.
  assert set(np.unique(test.labels)) == set(range(10))
  np.testing.assert_array_equal(data.load_digits("test").ids, test.ids)
  # The pixels are the 8x8 digits (0..16 -> 0..255) upsampled: compare to a float64 reference.
  i = int(test.ids[0])
  ref = _bilinear_reference(np.round(raw.images[i] * 255 / 16), 32)
  np.testing.assert_allclose(test.images[0, ..., 1], ref, atol=1.01)


# ---------------------------------------------------------------- Fashion-MNIST idx

def _idx_bytes(arr):
  arr = np.asarray(arr, np.uint8)
  return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
      arr.tobytes()


def test_parse_idx_against_struct_written_files_and_errors():
  arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  np.testing.assert_array_equal(fashion_mnist.parse_idx(_idx_bytes(arr)), arr)
  with pytest.raises(ValueError, match="truncated"):
    fashion_mnist.parse_idx(_idx_bytes(arr)[:-1], name="f")
  with pytest.raises(ValueError, match="magic"):
    fashion_mnist.parse_idx(b"\x01\x00\x08\x01", name="f")


def test_fashion_mnist_from_idx_dir_resized_to_rgb32(tmp_path):
  rng = np.random.default_rng(3)
  imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
  labels = np.array([0, 9, 3, 3, 1, 2], np.uint8)
  with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write(_idx_bytes(imgs))
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
  ds = fashion_mnist.load_fashion_mnist("test", data_dir=str(tmp_path), search_debian=False)
  assert ds.images.shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(ds.labels, labels)
  pil = np.asarray(Image.fromarray(imgs[1]).resize((32, 32), Image.BILINEAR))
  np.testing.assert_array_equal(ds.images[1, ..., 0], pil)
  with pytest.raises(data.DataNotFoundError, match="fashion_mnist.*dataset-fashion-mnist"):
    fashion_mnist.load_fashion_mnist("train", data_dir=str(tmp_path), search_debian=False)


@pytest.mark.skipif(not os.path.isfile(f"{SHARED}/fashion_mnist_test.npz"),
                    reason="shared Fashion-MNIST npz not present")
def test_fashion_mnist_debian_idx_matches_shared_npz_if_both_present():
  z = np.load(f"{SHARED}/fashion_mnist_test.npz")
  if os.path.isdir(fashion_mnist.DEBIAN_DIR):
    raw = fashion_mnist.load_idx_dir(fashion_mnist.DEBIAN_DIR, "test")
    np.testing.assert_array_equal(raw.images, z["images"])
    np.testing.assert_array_equal(raw.labels, z["labels"])
  ds = data.load_dataset("fashion_mnist", "test", data_dir=SHARED)
  assert ds.images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(ds.labels, z["labels"])


# ---------------------------------------------------------------- Waterbirds

def _waterbirds_folder(root, rows):
  (root / "imgs").mkdir()
  lines = ["img_id,img_filename,y,split,place,place_filename"]
  for i, (y, place, split) in enumerate(rows):
    color = (255 * y, 255 * place, 7 * i)
    Image.new("RGB", (40, 30), color).save(root / "imgs" / f"{i}.jpg", quality=100)
    lines.append(f"{i + 1},imgs/{i}.jpg,{y},{split},{place},x")
  (root / "metadata.csv").write_text("\n".join(lines) + "\n")


def test_waterbirds_groups_labels_and_splits(tmp_path):
  rows = [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0), (1, 1, 2), (0, 0, 1)]
  _waterbirds_folder(tmp_path, rows)
  train = data.load_dataset("waterbirds", "train", data_dir=str(tmp_path))
  assert train.images.shape == (4, 64, 64, 3)
  np.testing.assert_array_equal(train.groups, [0, 1, 2, 3])
  np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
  np.testing.assert_allclose(train.images[3, 10, 10, :2], [255, 255], atol=3)
  test = waterbirds.load_waterbirds(str(tmp_path), "test", image_size=16)
  assert test.ids.tolist() == [4] and test.groups.tolist() == [3]
  assert len(waterbirds.load_waterbirds(str(tmp_path), "validation")) == 1


def test_waterbirds_errors(tmp_path):
  with pytest.raises(data.DataNotFoundError, match="metadata.csv"):
    waterbirds.load_waterbirds(str(tmp_path), "train")
  (tmp_path / "metadata.csv").write_text("img_filename,y,split\nimgs/a.jpg,0,0\n")
  with pytest.raises(ValueError, match=r"missing column\(s\) \['place'\]"):
    waterbirds.load_waterbirds(str(tmp_path), "train")
  (tmp_path / "metadata.csv").write_text("img_filename,y,split,place\nimgs/a.jpg,0,0,0\n")
  with pytest.raises(ValueError, match="metadata.csv:2: image .*a.jpg does not exist"):
    waterbirds.load_waterbirds(str(tmp_path), "train")
  (tmp_path / "metadata.csv").write_text("img_filename,y,split,place\n../x.jpg,0,0,0\n")
  with pytest.raises(ValueError, match="outside"):
    waterbirds.load_waterbirds(str(tmp_path), "train")


# ---------------------------------------------------------------- prefetch and sharding

def test_prefetch_preserves_order_and_reraises():
  assert list(data.prefetch(iter(range(20)), size=3)) == list(range(20))

  def boom():
    yield 1
    raise RuntimeError("producer failed")

  it = data.prefetch(boom())
  assert next(it) == 1
  with pytest.raises(RuntimeError, match="producer failed"):
    next(it)


def test_prefetch_stops_its_thread_when_closed():
  before = threading.active_count()
  it = data.prefetch(iter(range(10**6)), size=2)
  next(it)
  it.close()
  for t in threading.enumerate():
    if t.name == "drojax-prefetch":
      t.join(timeout=2)
  assert threading.active_count() <= before


def test_shard_batch_places_on_the_data_axis():
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = next(data.epoch_batches(_toy(n=8), batch_size=4, seed=0, epoch=0))
  out = list(data.device_batches(iter([batch]), mesh))[0]
  assert out["image"].sharding == data.batch_sharding(mesh)
  np.testing.assert_array_equal(np.asarray(out["id"]), batch["id"])


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
  ds = data.load_dataset("fashion_mnist", "test")  # no data_dir: found in the package
  assert ds.images.shape == (10000, 32, 32, 3)
  assert np.bincount(ds.labels).tolist() == [1000] * 10  # the official test set is balanced
