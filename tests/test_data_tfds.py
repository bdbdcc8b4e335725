"""Tests for the TF-free CIFAR tfds builders, the tfds read path and the offline fail-fast."""

import io
import tarfile
import time

import numpy as np
import pytest

from drojax import data
from drojax.data import tfds_builders as tb

tfds = pytest.importorskip("tensorflow_datasets")


def _records(images, labels, coarse=None):
  """CIFAR binary records written independently: label byte(s) then R, G, B planes."""
  out = bytearray()
  for i, (img, lab) in enumerate(zip(images, labels)):
    if coarse is not None:
      out.append(int(coarse[i]))
    out.append(int(lab))
    for c in range(3):
      out.extend(img[:, :, c].tobytes())
  return bytes(out)


def _archive(path, prefix, members):
  with tarfile.open(path, "w:gz") as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(prefix + name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))


def test_parse_cifar100_records_picks_the_fine_label():
  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  raw = _records(imgs, [17, 99, 0], coarse=[1, 2, 3])
  got, labels = tb.parse_cifar_records(raw, label_bytes=2, label_index=1)
  np.testing.assert_array_equal(got, imgs)
  assert labels.tolist() == [17, 99, 0]
  with pytest.raises(ValueError, match="truncated"):
    tb.parse_cifar_records(raw[:-5], label_bytes=2, label_index=1, name="x.bin")


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  splits = {f"data_batch_{i}.bin": 2 for i in range(1, 6)}
  splits["test_batch.bin"] = 3
  ref = {}
  members = {}
  for name, n in splits.items():
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    ref[name] = (imgs, labels)
    members[name] = _records(imgs, labels)
  archive = tmp_path / "cifar-10-binary.tar.gz"
  _archive(archive, "cifar-10-batches-bin/", members)
  monkeypatch.setattr(tb.DrojaxCifar10, "SHA256", tb.sha256_of(str(archive)))
  return tmp_path, ref


def test_builder_prepares_from_a_local_archive_and_reads_without_tensorflow(tiny_cifar10):
  root, ref = tiny_cifar10
  test = data.load_dataset("cifar10", "test", data_dir=str(root))
  imgs, labels = ref["test_batch.bin"]
  order = np.argsort(test.ids)  # ArrayRecord shuffles; ids are the original indices
  np.testing.assert_array_equal(test.images[order], imgs)
  np.testing.assert_array_equal(test.labels[order], labels)
  train = data.load_dataset("cifar10", "train", data_dir=str(root))
  want = np.concatenate([ref[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
  np.testing.assert_array_equal(train.images[np.argsort(train.ids)], want)
  assert (root / "drojax_cifar10" / "1.0.0" / "dataset_info.json").exists()
  # Second load reads the prepared data (the archive is no longer needed).
  (root / "cifar-10-binary.tar.gz").unlink()
  again = data.load_dataset("cifar10", "test", data_dir=str(root))
  np.testing.assert_array_equal(again.images, test.images)


def test_checksum_mismatch_is_refused(tiny_cifar10, monkeypatch):
  root, _ = tiny_cifar10
  monkeypatch.setattr(tb.DrojaxCifar10, "SHA256", "0" * 64)
  with pytest.raises(ValueError, match="SHA-256"):
    data.load_dataset("cifar10", "test", data_dir=str(root))


def test_npz_in_data_dir_wins(tmp_path):
  imgs = np.zeros((4, 32, 32, 3), np.uint8)
  np.savez(tmp_path / "cifar100_test.npz", images=imgs, labels=np.array([0, 50, 99, 3]))
  ds = data.load_dataset("cifar100", "test", data_dir=str(tmp_path))
  assert ds.num_classes == 100 and ds.labels.tolist() == [0, 50, 99, 3]


def test_offline_missing_data_fails_fast_with_one_clear_message(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(tb, "_reachable", lambda url, timeout=3.0: False)
  start = time.perf_counter()
  with pytest.raises(data.DataNotFoundError) as info:
    data.load_dataset("cifar10", "train", data_dir=str(tmp_path / "d"), download=True)
  assert time.perf_counter() - start < 10
  msg = str(info.value)
  assert "\n" not in msg
  for part in ("cifar10", str(tmp_path / "d"), "--data_dir", "npz:PATH", "cifar-10-binary",
               "Could not reach"):
    assert part in msg


def test_read_prepared_through_tfds_mock_data():
  # tfds's own cifar10 builder (ClassLabel labels, Image feature), read via as_data_source.
  with tfds.testing.mock_data(num_examples=6):
    own = tfds.builder("cifar10", data_dir="/nonexistent-drojax-tfds")
    ds = tb.read_prepared(own, "train", num_classes=10, name="mock")
    # The drojax builder's plain-tensor features (the mock draws labels from 0..255).
    mine = tb.read_prepared(tb.DrojaxCifar10(data_dir="/nonexistent-drojax-tfds"), "test",
                            num_classes=256, name="mock")
  assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
  assert ds.labels.min() >= 0 and ds.labels.max() < 10
  assert mine.images.shape == (6, 32, 32, 3) and len(np.unique(mine.ids)) == 6
