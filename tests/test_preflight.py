"""experiments.train.check_evaluation: what the final evaluation needs, refused before training
(issue 25)."""

import numpy as np
import pytest

from drojax.data import DataNotFoundError
from experiments import cli, train
from experiments.configs import cifar_c as cifar_c_config

_N = 10  # rows per file: 5 severities x 2 images


def _config(**eval_fields):
  c = cifar_c_config.make_config("erm", preset="quick", dataset="cifar10")
  with c.unlocked():
    for k, v in eval_fields.items():
      c.eval[k] = v
  return c


@pytest.fixture()
def folder(tmp_path):
  np.save(tmp_path / "labels.npy", np.arange(_N) % 10)
  for name in ("fog", "snow"):
    np.save(tmp_path / f"{name}.npy", np.zeros((_N, 4, 4, 3), np.uint8))
  return tmp_path


def _published(folder, names=("fog", "snow")):
  return _config(corruptions="published", published_dir=str(folder), corruption_names=names)


def _check(config, k=10, shape=(4, 4, 3)):
  train.check_evaluation(config, num_classes=k, image_shape=shape, data_dir=None)


def test_complete_files_pass(folder):
  _check(_published(folder))


def test_empty_file_is_named(folder):
  (folder / "snow.npy").write_bytes(b"")
  with pytest.raises(cli.UsageError, match=r"snow\.npy: not a readable \.npy array \(0 bytes"):
    _check(_published(folder))


def test_truncated_file_is_named(folder):
  data = (folder / "snow.npy").read_bytes()
  (folder / "snow.npy").write_bytes(data[:-50])
  with pytest.raises(cli.UsageError, match=r"snow\.npy: not a readable \.npy array"):
    _check(_published(folder))


def test_every_missing_file_is_named(folder):
  with pytest.raises(DataNotFoundError, match=r"frost, zoom_blur.*frost\.npy"):
    _check(_published(folder, ("fog", "frost", "zoom_blur")))


def test_image_size_must_match_the_test_images(folder):
  with pytest.raises(cli.UsageError, match=r"fog\.npy: images are 4x4, the model's test images "
                     r"32x32"):
    _check(_published(folder), shape=(32, 32, 3))


def test_rows_must_split_into_five_severities(folder):
  np.save(folder / "fog.npy", np.zeros((_N - 1, 4, 4, 3), np.uint8))
  with pytest.raises(cli.UsageError, match=r"fog\.npy: 9 rows is not 5 severities"):
    _check(_published(folder))


def test_suite_needs_four_classes():
  config = _config(attack="suite", corruption_names=("none",))
  _check(config, k=4)  # control: 4 classes are enough
  with pytest.raises(cli.UsageError, match=r"eval\.attack=suite cannot evaluate cifar10 \(3 "
                     r"classes\): the suite's APGD-T needs at least 4 classes"):
    _check(config, k=3)
  _check(_config(attack="apgd", corruption_names=("none",)), k=3)  # APGD-CE needs 2
