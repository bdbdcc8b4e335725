"""drojax.evaluate.calibration (the pieces, against closed forms and a NumPy re-count) and
experiments/calibrate_severities.py (its table, files and CLI, end to end on a tiny model)."""

import json
import os
import subprocess
import sys

import hypothesis
import jax
import hypothesis.strategies as st
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from drojax.evaluate import calibration
from experiments import calibrate_severities as cs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_target_accuracies_are_linear():
  t = calibration.target_accuracies(0.92, 0.42)
  np.testing.assert_allclose(t, [0.92 - 0.1 * k for k in range(1, 6)], atol=1e-12)


@hypothesis.given(target=st.floats(0.0, 1.0), levels=st.sampled_from([16, 64, 1000]))
def test_solve_monotone_finds_the_crossing(target, levels):
  # A quantized, non-increasing accuracy curve with a known inverse: acc(s) = floor(L(1 - s/5))/L.
  acc = lambda s: np.floor(levels * (1 - s / 5)) / levels
  s, a, capped = calibration.solve_monotone(acc, target, 0.0, 5.0, iterations=10)
  assert not capped and a == acc(s)
  s_true = 5 * (1 - target)  # where the continuous curve crosses the target
  tol = 5 / 2 ** 10 + 5 / levels
  assert abs(s - s_true) <= tol + 1e-9 or abs(a - target) <= 1 / levels


def test_solve_monotone_caps_and_lower_end():
  s, a, capped = calibration.solve_monotone(lambda s: 0.9 - 0.01 * s, 0.5, 1.0, 5.0)
  assert capped and s == 5.0 and a == pytest.approx(0.85)
  s, a, capped = calibration.solve_monotone(lambda s: 0.4 - 0.01 * s, 0.5, 1.0, 5.0)
  assert not capped and s == 1.0  # already below the target at the lower end


def test_solve_monotone_uses_known_points_on_a_non_monotone_curve():
  acc = lambda s: 0.8 if s > 4.5 else 0.9 - 0.1 * s  # dips to 0.45 at 4.5, then recovers
  s, a, capped = calibration.solve_monotone(acc, 0.5, 0.0, 5.0)
  assert capped and s == 5.0  # end points only: the dip is invisible to bisection
  s, a, capped = calibration.solve_monotone(acc, 0.5, 0.0, 5.0,
                                            known={4.0: acc(4.0), 1.0: acc(1.0)})
  assert not capped and s == 4.0 and a == pytest.approx(0.5)


def test_format_matches_reference_table_style():
  assert cs.format_row([(.35, .45), (.4, .65), (.44, .9), (.89, 1.8), (1.2, 1.9)]) == \
      "(.35,.45)(.4,.65)(.44,.9)(.89,1.8)(1.2,1.9)"
  assert cs.format_row([(.035,), (.065,), (.085,), (.1,), (.12,)]) == ".035 .065 .085 .1 .12"
  assert cs.format_row([(450.,), (102.,), (62.,), (42.,), (30.,)]) == "450 102 62 42 30"


@pytest.fixture(scope="module")
def digits16():
  """Real data: sklearn's digits upsampled to 16x16 RGB uint8."""
  d = load_digits()
  x = (d.images / 16 * 255).astype(np.uint8)
  x = np.repeat(np.repeat(x, 2, 1), 2, 2)[..., None].repeat(3, -1)
  return x, d.target.astype(np.int64)


@pytest.fixture(scope="module")
def calibrated(digits16, tmp_path_factory):
  x, y = digits16
  model = cs.train_reference_model(x[:600], y[:600], num_classes=10, steps=60, width=8,
                                   workdir=str(tmp_path_factory.mktemp("reference")))
  cal = calibration.calibrate(jax.random.key(0), model, x[600:664], y[600:664],
                              names=["contrast", "brightness"], iterations=6)
  return model, cal, x[600:664], y[600:664]


def test_calibration_follows_targets(calibrated):
  _, cal, _, _ = calibrated
  n = cal["num_images"]
  assert n == 64
  assert cal["clean_accuracy"] > 0.5
  for name, r in cal["corruptions"].items():
    assert all(np.diff(r["severity"]) >= 0), name  # severities stay ordered
    for a, t, capped in zip(r["after"], cal["targets"], r["capped"]):
      if not capped:
        assert abs(a - t) <= 3 / n, (name, r)
  assert cal["mean_abs_error_after"] <= cal["mean_abs_error_before"]
  assert not any(cal["corruptions"]["contrast"]["capped"])


def test_calibrate_refuses_bad_arguments_by_name(calibrated):
  model, _, x, y = calibrated
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="iterations"):
    calibration.calibrate(key, model, x, y, names=["contrast"], iterations=0)
  with pytest.raises(ValueError, match="nope"):
    calibration.calibrate(key, model, x, y, names=["nope"])
  with pytest.raises(ValueError, match="channels"):
    calibration.accuracy_at_severity(key, model, x[..., :2], y, "contrast", table="standard")


def test_contrast_accuracy_reproduced_by_numpy(calibrated):
  """Contrast is deterministic: re-corrupt with the table's parameter in NumPy (per-image
  channel mean, make_cifar_c's formula) and re-count the model's hits."""
  model, cal, x, y = calibrated
  r = cal["corruptions"]["contrast"]
  xf = x.astype(np.float64) / 255
  m = xf.mean(axis=(1, 2), keepdims=True)
  for (c,), a in zip(r["params"], r["after"]):
    xc = np.clip((xf - m) * c + m, 0, 1).astype(np.float32)
    pred = np.argmax(np.asarray(model(xc)), -1)
    assert abs(np.mean(pred == y) - a) <= 1 / len(y) + 1e-12, c


def test_write_calibration(calibrated, tmp_path):
  _, cal, _, _ = calibrated
  paths = cs.write_calibration(cal, str(tmp_path), label="digits")
  md = open(paths["md"]).read()
  assert "| corruption | digits sev 1..5 |" in md
  assert f"| contrast | {cs.format_row(cal['corruptions']['contrast']['params'])} |" in md
  back = json.load(open(paths["json"]))
  brightness = cal["corruptions"]["brightness"]
  assert back["corruptions"]["brightness"]["severity"] == brightness["severity"]
  with Image.open(paths["png"]) as im:
    assert np.asarray(im).std() > 0


def test_run_demo_end_to_end(digits16, tmp_path):
  x, y = digits16
  npz = tmp_path / "d.npz"
  np.savez(npz, images=x[:200], labels=y[:200])
  cal = cs.run(images=str(npz), out=str(tmp_path / "out"), names=["contrast"],
               train_steps=20, width=8, num_images=64, iterations=3, label="tiny")
  for p in cal["paths"].values():
    assert os.path.isfile(p)
  assert len(cal["corruptions"]["contrast"]["params"]) == 5


def test_cli_bad_flags_exit_2_naming_the_flag(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  npz = tmp_path / "ok.npz"
  np.savez(npz, images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1]))
  for args, needle in (([f"--images={tmp_path}/missing.npz"], "missing.npz not found"),
                       ([f"--images={npz}", "--iterations=0"], "--iterations must be >= 1; got 0"),
                       ([f"--images={npz}", "--names=fogg"], "--names")):
    p = subprocess.run([sys.executable, "-m", "experiments.calibrate_severities", *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_load_workdir_model_restores_a_training_checkpoint(tmp_path):
  """A workdir as the training loop leaves it (config.json + orbax checkpoints/) gives back
  the same eval-mode logits as the saved state's variables."""
  from drojax import models, train
  from drojax.checkpoint import Checkpointer

  model = models.get_model("tiny", num_classes=3)
  state = train.create_train_state(jax.random.key(0), model, train.make_optimizer(10), (8, 8, 3))
  Checkpointer(str(tmp_path / "checkpoints")).save(state, meta={"epoch": 0, "batch": 0})
  (tmp_path / "config.json").write_text(json.dumps({"model": "tiny", "width": None}))
  bound = cs.load_workdir_model(str(tmp_path), 3)
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
  ref = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
  np.testing.assert_allclose(np.asarray(bound(x)), np.asarray(ref), atol=1e-6)
  with pytest.raises(FileNotFoundError, match="config.json"):
    cs.load_workdir_model(str(tmp_path / "nothing"), 3)
