"""The group-shift benchmarks (drojax.data.group_shift) against their recipes, re-derived here."""

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_digits

from drojax import data
from drojax.data import group_shift as gs
from tests._shared_data import SHARED_DATA, write_tiny_fashion_mnist


@pytest.fixture(scope="module")
def colored():
  return {split: gs.colored_digits(split) for split in gs.SPLITS}


def _colour_of_pixels(images):
  """0 where only the red channel is lit, 1 where only the green one is (else -1)."""
  red, green, blue = (images[..., c].reshape(len(images), -1).sum(1) for c in range(3))
  assert (blue == 0).all()
  return np.where((red > 0) & (green == 0), 0, np.where((green > 0) & (red == 0), 1, -1))


def test_colored_digits_follows_the_recipe(colored):
  digits = sk_digits().target
  ids = np.concatenate([colored[s].dataset.ids for s in gs.SPLITS])
  assert sorted(ids.tolist()) == list(range(len(digits)))  # a partition of the 1,797 digits
  flips = {0: [], 1: [], 2: []}
  for split, s in colored.items():
    ds = s.dataset
    assert ds.image_shape == (16, 16, 3) and ds.num_classes == 2
    colour = _colour_of_pixels(ds.images)
    np.testing.assert_array_equal(colour, s.attribute)
    np.testing.assert_array_equal(ds.groups, 2 * ds.labels + colour)
    clean = (digits[ds.ids] < 5).astype(int)
    np.testing.assert_array_equal(ds.labels, clean ^ s.label_flipped)
    for e in np.unique(ds.environments):
      flips[int(e)].append(colour[ds.environments == e] != ds.labels[ds.environments == e])
  assert set(colored["train"].dataset.environments.tolist()) == {0, 1}
  assert set(colored["test"].dataset.environments.tolist()) == {2}
  # Rates within 4 binomial standard deviations of the recipe's probabilities.
  noise = np.concatenate([s.label_flipped for s in colored.values()])
  assert abs(noise.mean() - gs.LABEL_NOISE) < 4 * np.sqrt(0.25 * 0.75 / len(noise))
  for e, p in enumerate(gs.COLOUR_FLIP):
    f = np.concatenate(flips[e])
    assert abs(f.mean() - p) < 4 * np.sqrt(p * (1 - p) / len(f)), (e, f.mean())


def test_colored_digits_is_deterministic_and_seeded(colored):
  again = gs.colored_digits("validation")
  np.testing.assert_array_equal(again.dataset.images, colored["validation"].dataset.images)
  np.testing.assert_array_equal(again.dataset.labels, colored["validation"].dataset.labels)
  other = gs.colored_digits("validation", seed=1)
  assert not np.array_equal(other.dataset.ids, colored["validation"].dataset.ids)


def test_recipe_by_hand():
  labels, colours, flipped = gs.colored_mnist_recipe(
      np.array([0, 0, 1, 1]), np.array([0.1, 0.9, 0.1, 0.9]),
      np.array([0.1, 0.5, 0.5, 0.2]), np.array([0.05, 0.5, 0.5, 0.95]))
  assert flipped.tolist() == [True, False, False, True]
  assert labels.tolist() == [1, 0, 1, 0]
  assert colours.tolist() == [0, 1, 1, 0]  # flipped where u_colour < p


def test_registry_and_batches_carry_groups_and_environments(colored):
  ds = data.load_dataset("colored_digits", "validation")
  np.testing.assert_array_equal(ds.images, colored["validation"].dataset.images)
  batch = next(data.epoch_batches(ds, batch_size=8, seed=0, epoch=0))
  lookup = {int(i): k for k, i in enumerate(ds.ids)}
  rows = np.array([lookup[int(i)] for i in batch["id"]])
  np.testing.assert_array_equal(batch["group"], ds.groups[rows])
  np.testing.assert_array_equal(batch["environment"], ds.environments[rows])
  sub = ds.take(np.arange(5))
  np.testing.assert_array_equal(sub.environments, ds.environments[:5])
  with pytest.raises(ValueError, match="environments must be integers of shape"):
    two = np.array([np.flatnonzero(ds.labels == c)[0] for c in (0, 1)])  # 2 classes, so only
    data.ArrayDataset.create(ds.images[two], ds.labels[two],  # the environments are wrong
                             environments=np.zeros(3, int))
  with pytest.raises(ValueError, match="split must be one of"):
    gs.colored_digits("val")


def test_colored_fashion_mnist_recipe(tmp_path):
  write_tiny_fashion_mnist(tmp_path, train=64, test=16)
  raw = np.load(tmp_path / "fashion_mnist_train.npz")["labels"]
  train = gs.colored_fashion_mnist("train", data_dir=str(tmp_path))
  val = gs.colored_fashion_mnist("validation", data_dir=str(tmp_path))
  test = data.load_dataset("colored_fashion_mnist", "test", data_dir=str(tmp_path))
  assert (len(train.dataset), len(val.dataset), len(test)) == (51, 13, 16)
  assert not set(train.dataset.ids.tolist()) & set(val.dataset.ids.tolist())
  for s in (train, val):
    ds = s.dataset
    np.testing.assert_array_equal(_colour_of_pixels(ds.images), s.attribute)
    np.testing.assert_array_equal(ds.labels, (raw[ds.ids] < 5) ^ s.label_flipped)
  assert set(test.environments.tolist()) == {2} and test.ids.min() >= 60000


def test_missing_cifar_is_one_clear_error(tmp_path):
  with pytest.raises(data.DataNotFoundError, match="cifar10_train.npz"):
    data.load_dataset("dominoes", "train", data_dir=str(tmp_path))


@pytest.mark.skipif(not (SHARED_DATA / "cifar10_train.npz").is_file(),
                    reason="needs shared/data/cifar10_train.npz")
def test_dominoes_construction():
  cifar = np.load(SHARED_DATA / "cifar10_train.npz")
  splits = {s: gs.dominoes(s, data_dir=str(SHARED_DATA)).dataset for s in gs.SPLITS}
  assert np.bincount(splits["train"].groups).tolist() == [2850, 150, 150, 2850]
  for s in ("validation", "test"):
    assert np.bincount(splits[s].groups).tolist() == [500] * 4
  all_ids = np.concatenate([d.ids for d in splits.values()])
  assert len(np.unique(all_ids)) == len(all_ids)  # no CIFAR image in two splits
  for split, ds in splits.items():
    assert ds.image_shape == (64, 32, 3)
    np.testing.assert_array_equal(ds.images[:, 32:], cifar["images"][ds.ids])
    np.testing.assert_array_equal(ds.labels, (cifar["labels"][ds.ids] == 9).astype(int))
    digits = data.load_digits("train" if split == "train" else "test")
    attribute = ds.groups % 2
    for d in (0, 1):
      pool = {digits.images[i].tobytes() for i in np.flatnonzero(digits.labels == d)}
      tops = ds.images[attribute == d, :32]
      assert all(t.tobytes() in pool for t in tops[:50])
