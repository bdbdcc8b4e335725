"""Group-shift benchmarks built offline, deterministic from a seed: Colored digits / Fashion-MNIST
(Arjovsky et al. 2019, "Colored MNIST") and dominoes (Shah et al. 2020).

Every example carries a group id ``2 * label + attribute`` (the spurious attribute: a colour or
a stacked digit), so groups 0..3 are (0, 0), (0, 1), (1, 0), (1, 1). Each benchmark has a
``train`` split, a ``validation`` split with group labels (for model selection) and a ``test``
split. Images are uint8 NHWC at this boundary.

**Colored MNIST recipe** (``colored_digits``: scikit-learn's bundled 8x8 digits, no download;
``colored_fashion_mnist``: Fashion-MNIST from ``data_dir``):

1. binary label ``digit < 5`` (Fashion-MNIST: class < 5: T-shirt, trouser, pullover, dress,
   coat), then flipped with probability 0.25 (label noise; no classifier of the shape alone can
   beat 75 %);
2. colour = the (noisy) label, flipped with probability 0.1 in training environment 0, 0.2 in
   environment 1 and 0.9 in the test environment 2 (a classifier of the colour alone gets 85 %
   on training and 10 % on test);
3. the grey image is written to the red channel (colour 0) or the green channel (colour 1),
   resized bilinearly to 16x16 (Arjovsky et al. use 14x14; 16 divides by the models' 8x
   downsampling).

``colored_digits``: the 1,797 digits are permuted with the seed: 60 % train (two equal
environments), 20 % validation (half drawn like environment 0, half like 1: the training
distribution, as model selection sees it), 20 % test. ``colored_fashion_mnist``: the training
file is split 80 / 20 into train (two environments) and validation; the test file is the test
split. Environment ids: 0 and 1 (train, validation), 2 (test).

**Dominoes** (``dominoes``, from ``cifar10_train.npz`` in ``data_dir`` and the bundled digits):
a 64x32 image, a digit 0 or 1 (32x32, the spurious attribute: simple) on top of a CIFAR-10
automobile (label 0) or truck (label 1) below (the core feature: harder). Of each class's 5,000
training images (lossless PNG), a seeded 3,000 go to train, 1,000 to validation, 1,000 to test,
so every split has the same image statistics. In train, 95 % of each class shows the digit equal
to its label (groups 0 and 3, the majority) and 5 % the other (groups 1 and 2); validation and
test are balanced (500 per group). Train digits come from the digits' train split, validation and
test digits from its test split. There are no environments (objectives that need them use the
groups).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from drojax.data.arrays import ArrayDataset, load_npz
from drojax.data.errors import DataNotFoundError
from drojax.data.images import resize_uint8

BENCHMARKS = ("colored_digits", "colored_fashion_mnist", "dominoes")
SPLITS = ("train", "validation", "test")
NUM_CLASSES = 2
NUM_GROUPS = 4
LABEL_NOISE = 0.25
COLOUR_FLIP = (0.1, 0.2, 0.9)  # training environments 0 and 1, test environment 2
DOMINO_MAJORITY = 0.95
DOMINO_CLASSES = (1, 9)  # CIFAR-10 automobile, truck
DOMINO_SPLIT = (3000, 1000, 1000)  # per class: train, validation, test
DEFAULT_SEED = 0
COLORED_SIZE = 16


@dataclasses.dataclass(frozen=True)
class GroupShiftSplit:
  """A split of a benchmark and what the recipe knows about each example.

  Attributes:
    dataset: the ``ArrayDataset`` (labels, groups, environments where the benchmark has them).
    label_flipped: ``[N]`` bool: the observed label is the flipped one (Colored MNIST's 25 %
      label noise; all False for dominoes).
    attribute: ``[N]`` int32 spurious attribute (colour, or the stacked digit).
  """

  dataset: ArrayDataset
  label_flipped: np.ndarray
  attribute: np.ndarray


def group_of(labels: np.ndarray, attribute: np.ndarray) -> np.ndarray:
  """``2 * label + attribute``.

  >>> group_of(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])).tolist()
  [0, 1, 2, 3]
  """
  return (2 * np.asarray(labels) + np.asarray(attribute)).astype(np.int32)


def colored_mnist_recipe(binary: np.ndarray, colour_flip: np.ndarray, u_label: np.ndarray,
                         u_colour: np.ndarray, *, label_noise: float = LABEL_NOISE):
  """The Colored MNIST labels and colours from uniform draws (a pure function).

  Args:
    binary: ``[N]`` {0, 1} clean binary labels.
    colour_flip: ``[N]`` probability that the colour differs from the observed label.
    u_label, u_colour: ``[N]`` uniform draws in [0, 1).
    label_noise: probability that the observed label is flipped.

  Returns:
    ``(labels, colours, label_flipped)``: ``[N]`` int32, int32, bool.

  >>> colored_mnist_recipe(np.array([0, 1, 1]), np.array([0.1, 0.1, 0.9]),
  ...                      np.array([0.9, 0.1, 0.9]), np.array([0.5, 0.5, 0.5]))[:2]
  (array([0, 0, 1], dtype=int32), array([0, 0, 0], dtype=int32))
  """
  label_flipped = np.asarray(u_label) < label_noise
  labels = (np.asarray(binary).astype(bool) ^ label_flipped).astype(np.int32)
  colours = (labels.astype(bool) ^ (np.asarray(u_colour) < colour_flip)).astype(np.int32)
  return labels, colours, label_flipped


def colorize(grey: np.ndarray, colours: np.ndarray, *, size: int = COLORED_SIZE) -> np.ndarray:
  """Grey ``[N, H, W]`` uint8 -> ``[N, size, size, 3]`` uint8, red (colour 0) or green (1)."""
  grey = resize_uint8(np.asarray(grey, np.uint8)[..., None], size)[..., 0]
  out = np.zeros(grey.shape + (3,), np.uint8)
  rows = np.arange(len(grey))
  out[rows, :, :, np.asarray(colours)] = grey
  return out


def _check(name: str, split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"{name} split must be one of {SPLITS}, got {split!r}")


def _colored(name: str, grey: np.ndarray, classes: np.ndarray, ids: np.ndarray,
             colour_flip: np.ndarray, environments: np.ndarray, seed: int,
             split: str) -> GroupShiftSplit:
  # Uniform draws are indexed by the example id, so an example is coloured the same whichever
  # split or subset asks for it.
  rng = np.random.default_rng([seed, 0x636F6C])
  size = int(ids.max()) + 1
  u_label, u_colour = rng.random(size), rng.random(size)
  labels, colours, flipped = colored_mnist_recipe(
      (classes < 5).astype(np.int32), colour_flip, u_label[ids], u_colour[ids])
  ds = ArrayDataset.create(colorize(grey, colours), labels, num_classes=NUM_CLASSES, ids=ids,
                           groups=group_of(labels, colours), environments=environments,
                           name=f"{name}/{split}")
  return GroupShiftSplit(ds, flipped, colours)


def _env_halves(n: int) -> np.ndarray:
  return (np.arange(n) >= n // 2).astype(np.int32)


def _colored_split(split: str, train_part: np.ndarray, val_part: np.ndarray,
                   test_part: np.ndarray):
  """(indices, environments) of ``split`` given the seeded partitions."""
  if split == "train":
    return train_part, _env_halves(len(train_part))
  if split == "validation":
    return val_part, _env_halves(len(val_part))
  return test_part, np.full(len(test_part), 2, np.int32)


def colored_digits(split: str, *, seed: int = DEFAULT_SEED) -> GroupShiftSplit:
  """``split`` of ``colored_digits`` (see the module docstring): ``[N, 16, 16, 3]`` uint8.

  >>> s = colored_digits("train")
  >>> len(s.dataset), s.dataset.image_shape, sorted(set(s.dataset.environments.tolist()))
  (1078, (16, 16, 3), [0, 1])
  """
  from sklearn.datasets import load_digits as _sk_load_digits

  _check("colored_digits", split)
  raw = _sk_load_digits()
  grey = np.clip(np.round(raw.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  n = len(grey)
  order = np.random.default_rng([seed, 0x646967]).permutation(n)
  n_train, n_val = int(round(0.6 * n)), int(round(0.2 * n))
  parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
  idx, env = _colored_split(split, *parts)
  return _colored("colored_digits", grey[idx], raw.target[idx], idx.astype(np.int32),
                  np.asarray(COLOUR_FLIP)[env], env, seed, split)


def colored_fashion_mnist(split: str, *, data_dir: str | None,
                          seed: int = DEFAULT_SEED) -> GroupShiftSplit:
  """``split`` of ``colored_fashion_mnist`` from Fashion-MNIST in ``data_dir`` (or Debian's)."""
  from drojax.data.fashion_mnist import load_fashion_mnist

  _check("colored_fashion_mnist", split)
  source = load_fashion_mnist("test" if split == "test" else "train", data_dir=data_dir)
  grey, classes = source.images[..., 0], source.labels
  n = len(grey)
  if split == "test":
    idx, env = np.arange(n), np.full(n, 2, np.int32)
  else:
    order = np.random.default_rng([seed, 0x666D6E]).permutation(n)
    n_train = int(round(0.8 * n))
    idx = order[:n_train] if split == "train" else order[n_train:]
    env = _env_halves(len(idx))
  # Test ids are offset past the training file's, so that no id means two examples.
  ids = idx + (60000 if split == "test" else 0)
  return _colored("colored_fashion_mnist", grey[idx], classes[idx], ids.astype(np.int32),
                  np.asarray(COLOUR_FLIP)[env], env, seed, split)


def _cifar_train(data_dir: str | None) -> ArrayDataset:
  path = os.path.join(data_dir, "cifar10_train.npz") if data_dir else None
  if path is None or not os.path.isfile(path):
    raise DataNotFoundError("dominoes", [path] if path else [],
                            "Pass --data_dir=DIR holding cifar10_train.npz (uint8 'images' "
                            "[50000, 32, 32, 3], 'labels' in CIFAR-10's class order).")
  return load_npz(path, name="cifar10_train.npz")


def dominoes(split: str, *, data_dir: str | None, seed: int = DEFAULT_SEED) -> GroupShiftSplit:
  """``split`` of ``dominoes`` (see the module docstring): ``[N, 64, 32, 3]`` uint8."""
  from drojax.data.digits import load_digits

  _check("dominoes", split)
  cifar = _cifar_train(data_dir)
  rng = np.random.default_rng([seed, 0x646F6D, SPLITS.index(split)])
  start = sum(DOMINO_SPLIT[:SPLITS.index(split)])
  per_class = DOMINO_SPLIT[SPLITS.index(split)]
  picks, labels, attrs = [], [], []
  for y, c in enumerate(DOMINO_CLASSES):
    pool = np.flatnonzero(cifar.labels == c)
    if len(pool) < sum(DOMINO_SPLIT):
      raise ValueError(f"dominoes: cifar10_train.npz has {len(pool)} images of class {c}, "
                       f"need {sum(DOMINO_SPLIT)}")
    chosen = np.random.default_rng([seed, 0x646F6D, c]).permutation(pool)[start:start + per_class]
    minority = (per_class - int(round(DOMINO_MAJORITY * per_class)) if split == "train"
                else per_class // 2)
    a = np.full(per_class, y, np.int32)
    a[rng.permutation(per_class)[:minority]] = 1 - y
    picks.append(chosen)
    labels.append(np.full(per_class, y, np.int32))
    attrs.append(a)
  picks, labels, attrs = map(np.concatenate, (picks, labels, attrs))
  digits = load_digits("train" if split == "train" else "test")
  digit_pools = [np.flatnonzero(digits.labels == d) for d in (0, 1)]
  tops = np.empty((len(picks),) + digits.image_shape, np.uint8)
  for d in (0, 1):
    where = np.flatnonzero(attrs == d)
    tops[where] = digits.images[rng.choice(digit_pools[d], len(where))]
  images = np.concatenate([tops, cifar.images[picks]], axis=1)
  ds = ArrayDataset.create(images, labels, num_classes=NUM_CLASSES, ids=picks.astype(np.int32),
                           groups=group_of(labels, attrs), name=f"dominoes/{split}")
  return GroupShiftSplit(ds, np.zeros(len(ds), bool), attrs)


def load_group_shift(name: str, split: str, *, data_dir: str | None = None,
                     seed: int = DEFAULT_SEED) -> GroupShiftSplit:
  """``split`` of benchmark ``name`` (one of ``BENCHMARKS``)."""
  if name == "colored_digits":
    return colored_digits(split, seed=seed)
  if name == "colored_fashion_mnist":
    return colored_fashion_mnist(split, data_dir=data_dir, seed=seed)
  if name == "dominoes":
    return dominoes(split, data_dir=data_dir, seed=seed)
  raise ValueError(f"unknown group-shift benchmark {name!r}; expected one of {BENCHMARKS}")
