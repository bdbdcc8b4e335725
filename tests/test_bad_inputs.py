"""Table of the library's bad inputs: each case is a call, the exception it must raise, and a
phrase its message must contain (issue 15). Every case fails at the boundary, before compiling
the function it guards, so the table stays cheap. Calls that read files get ``d``, a folder of
prepared ``.npz`` files."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from drojax import attacks, augment, corruptions, weighting
from drojax._checks import check_unit_range
from drojax.data import DataError, arrays, registry
from experiments.configs import cifar_c as cifar_c_config
from experiments.configs import common
from drojax.specs import ConfigError, Real, Tuple

_KEY = jax.random.key(0)
_F = lambda z: jnp.stack([z.mean((1, 2, 3)), -z.mean((1, 2, 3))], -1)  # noqa: E731
_Y = jnp.array([0, 1])
_X255 = jnp.full((2, 4, 4, 3), 128.0)  # an image in 0..255 passed by mistake
_XNEG = jnp.full((2, 4, 4, 3), -0.5)
_XNAN = jnp.full((2, 4, 4, 3), 0.5).at[1, 2, 3, 0].set(jnp.nan)
_C255 = jnp.full((1, 32, 32, 3), 255.0)

def _config(method="erm", **fields):
  c = cifar_c_config.make_config(method, preset="quick", dataset="digits")
  with c.unlocked():
    for path, value in fields.items():
      node = c
      *parents, leaf = path.split("__")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


_L3 = jnp.array([0.5, 2.0, 1.0])

CASES = [
    # Images must lie in [0, 1] when concrete (clipping or quantizing 0..255 destroys them).
    ("fgsm_255", lambda: attacks.fgsm(_F, _X255, _Y, eps=0.1), ValueError,
     "fgsm: x must lie in [0, 1]; got values in [128, 128]. Divide 0..255 images by 255"),
    ("fgsm_nan", lambda: attacks.fgsm(_F, _XNAN, _Y, eps=0.1), ValueError,
     "contains 1 NaN value(s)"),
    ("pgd_255", lambda: attacks.pgd(_KEY, _F, _X255, _Y, eps=0.1, step_size=0.1, num_steps=1),
     ValueError, "pgd: x must lie in [0, 1]"),
    ("pgd_negative", lambda: attacks.pgd(_KEY, _F, _XNEG, _Y, eps=0.1, step_size=0.1,
                                         num_steps=1), ValueError, "got values in [-0.5, -0.5]"),
    ("pgd_robust_255", lambda: attacks.pgd_robust(_KEY, _F, _X255, _Y, eps=0.1, step_size=0.1,
                                                  num_steps=1), ValueError, "divide"),
    ("robust_accuracy_255", lambda: attacks.robust_accuracy(
        _KEY, _F, _X255, _Y, eps=0.1, step_size=0.1, num_steps=1), ValueError, "by 255"),
    ("apgd_255", lambda: attacks.apgd(_KEY, _F, _X255, _Y, eps=0.1, num_steps=1), ValueError,
     "apgd: x must lie in [0, 1]"),
    ("square_255", lambda: attacks.square(_KEY, _F, _X255, _Y, eps=0.1), ValueError,
     "square: x must lie in [0, 1]"),
    ("corrupt_255", lambda: corruptions.corrupt(_KEY, _C255, name="fog", severity=1), ValueError,
     "images must lie in [0, 1]; got values in [255, 255]"),
    ("augmix_255", lambda: augment.augmix(_KEY, _X255), ValueError, "images must lie in [0, 1]"),
    ("augmix_views_255", lambda: augment.augmix_views(_KEY, _X255), ValueError, "by 255"),
    ("random_crop_flip_255", lambda: augment.random_crop_flip(_KEY, _X255), ValueError,
     "images must lie in [0, 1]"),
    ("crop_flip_nan", lambda: augment.crop_flip(_XNAN, jnp.zeros((2, 2), jnp.int32),
                                                jnp.zeros(2, bool)), ValueError, "NaN"),
    ("ops_rotate_255", lambda: augment.ops.rotate(_X255[0], 30.0), ValueError,
     "image must lie in [0, 1]"),
    # Water-filling and the Var-DRO pieces: concrete bad values are errors (under jit a bad
    # radius gives NaN weights: tests/test_weighting.py).
    ("water_filling_negative_eps", lambda: weighting.water_filling(_L3, -0.5), ValueError,
     "eps must be >= 0"),
    ("water_filling_nan_eps", lambda: weighting.water_filling(_L3, jnp.array([0.1, jnp.nan, 0.1])),
     ValueError, "eps must be >= 0"),
    ("water_filling_rank2", lambda: weighting.water_filling(jnp.ones((2, 3)), 0.1), ValueError,
     "losses must have rank 1"),
    ("water_filling_eps_shape", lambda: weighting.water_filling(_L3, jnp.ones(4)), ValueError,
     "eps must be a scalar or have shape [B]"),
    ("water_filling_int_losses", lambda: weighting.water_filling(jnp.ones(3, jnp.int32), 0.1),
     TypeError, "losses must be a floating-point array"),
    ("water_filling_empty", lambda: weighting.water_filling(jnp.ones((0,)), 0.1), ValueError,
     "at least one example"),
    ("radii_max_below_min", lambda: weighting.radii(_L3, eps_min=1.0, eps_max=0.5), ValueError,
     "eps_max must be >= eps_min"),
    ("schedule_negative_warmup", lambda: weighting.eps_max_schedule(
        0, warmup_steps=-1, ramp_steps=2, eps_max=1.0), ValueError, "warmup_steps must be >= 0"),
    ("tracker_ids_out_of_range", lambda: weighting.update_tracker(
        weighting.init_tracker(3), jnp.array([0, 3]), jnp.ones(2)), ValueError,
     "ids must lie in [0, 3)"),
    ("tracker_empty", lambda: weighting.init_tracker(0), ValueError,
     "num_examples must be an int >= 1"),
    ("tracker_ema_zero", lambda: weighting.update_tracker(
        weighting.init_tracker(3), jnp.array([0]), jnp.ones(1), ema=0.0), ValueError,
     "ema must be in (0, 1]"),
    # Data files: one error naming the file (DataError, a ValueError).
    ("npz_missing", lambda d: arrays.load_npz(f"{d}/nope.npz"), DataError, "nope.npz: no such"),
    ("npz_not_an_archive", lambda d: arrays.load_npz(f"{d}/junk.npz"), DataError,
     "junk.npz: not a readable .npz archive"),
    ("npz_missing_key", lambda d: arrays.load_npz(f"{d}/nolabels.npz"), DataError,
     "nolabels.npz: missing key(s) ['labels']"),
    ("npz_empty", lambda d: arrays.load_npz(f"{d}/empty.npz"), DataError,
     "empty.npz: holds no examples"),
    ("npz_stray_label", lambda d: arrays.load_npz(f"{d}/stray_train.npz"), DataError,
     "38 classes are inferred, but 34 of them have no example"),
    ("npz_float_images", lambda d: arrays.load_npz(f"{d}/float.npz"), DataError,
     "float.npz: images must be uint8"),
    ("npz_bad_num_classes_key", lambda d: arrays.load_npz(f"{d}/badk.npz"), DataError,
     "key 'num_classes' must be a positive integer scalar"),
    ("npz_label_beyond_declared", lambda d: arrays.load_npz(f"{d}/stray_train.npz",
                                                            num_classes=10), DataError,
     "labels must lie in [0, 10)"),
    ("npz_test_label_outside_train", lambda d: registry.load_train_test(
        f"npz:{d}/out_train.npz"), DataError, "out_test.npz: labels must lie in [0, 3)"),
    ("npz_split_shapes_differ", lambda d: registry.load_train_test(f"npz:{d}/shapes_train.npz"),
     DataError, "differ in shape from the training images"),
    ("dataset_unknown", lambda: registry.load_dataset("cifar1O", "train"), ValueError,
     "Did you mean 'cifar10'"),
    # Experiment configs: every field checked, in the library beside its factory.
    ("config_rho_nan", lambda: common.validate(_config("dro", method_config__rho=float("nan"))),
     ConfigError, "method_config.rho: expected a finite number >= 0, got nan"),
    ("config_q_half", lambda: common.validate(_config("dro", method_config__q=0.5)),
     ConfigError, "method_config.q: expected a number >= 1"),
    ("config_momentum", lambda: common.validate(_config(momentum=1.5)), ConfigError,
     "momentum: expected a finite number >= 0 and < 1"),
    ("config_seed_negative", lambda: common.validate(_config(seed=-1)), ConfigError,
     "seed: expected an integer >= 0"),
    ("config_seed_bool", lambda: common.validate(_config(seed=True)), ConfigError,
     "seed: expected an integer"),
    ("config_optimizer", lambda: common.validate(_config(optimizer="adamw")), ConfigError,
     "optimizer: unknown value 'adamw'; expected one of sgd, adam. Did you mean 'adam'?"),
    ("config_eps_order", lambda: common.validate(_config(
        "var_dro", method_config__var_dro_eps_min=2.0)), ConfigError,
     "method_config.var_dro_eps_min: must be <= var_dro_eps_max (1), got 2"),
    ("config_warmup_epochs", lambda: common.validate(_config(num_epochs=3, warmup_epochs=5)),
     ConfigError,
     "warmup_epochs: must be < num_epochs (3), got 5 epochs"),
    ("config_adv_eps_strings", lambda: common.validate(_config(eval__adv_eps=("8/255",))),
     ConfigError, "eval.adv_eps: item 0: expected a finite number"),
    ("config_cvar_alpha", lambda: common.validate(_config("cvar", method_config__cvar_alpha=0.0)),
     ConfigError, "cvar_alpha: expected a finite number > 0 and <= 1"),
    ("config_kl_temperature", lambda: common.validate(_config(
        "kl_dro", method_config__kl_temperature=0.0)), ConfigError, "kl_temperature"),
    ("config_augmix_severity", lambda: common.validate(_config(
        "augmix", method_config__augmix_severity=0)), ConfigError, "augmix_severity"),
    ("parse_number", lambda: Real().parse("eight"), ValueError, "a fraction like 8/255 is fine"),
    ("parse_tuple_item", lambda: Tuple(Real()).parse("0.1,,0.2"), ValueError, "empty item 1"),
]


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("npz")
  im = np.zeros((8, 8, 8, 3), np.uint8)
  lab = np.arange(8) % 3

  def save(name, **a):
    np.savez(d / name, **a)

  (d / "junk.npz").write_bytes(b"not a zip file")
  save("nolabels.npz", images=im)
  save("empty.npz", images=im[:0], labels=lab[:0])
  save("stray_train.npz", images=im, labels=np.r_[lab[:7], 37])
  save("float.npz", images=im.astype(np.float32), labels=lab)
  save("badk.npz", images=im, labels=lab, num_classes=np.float32(3))
  save("out_train.npz", images=im, labels=lab)
  save("out_test.npz", images=im, labels=np.r_[lab[:7], 3])
  save("shapes_train.npz", images=im, labels=lab)
  save("shapes_test.npz", images=np.zeros((8, 4, 4, 3), np.uint8), labels=lab)
  return str(d)


def test_the_table_is_large_enough():
  assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("fn,exc,phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(fn, exc, phrase, npz_dir):
  with pytest.raises(exc) as info:
    fn(npz_dir) if fn.__code__.co_argcount else fn()
  message = str(info.value)
  assert phrase.lower() in message.lower(), message
  assert "\n" not in message


def test_unit_range_finds_one_nan_in_a_large_image():
  # XLA:CPU's min/max over this many elements returned finite values despite the NaN.
  x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  x[0, 5, 5, 1] = np.nan
  with pytest.raises(ValueError, match="contains 1 NaN value"):
    check_unit_range("images", jnp.asarray(x))
  with pytest.raises(ValueError, match="contains 1 NaN value"):
    corruptions.corrupt(_KEY, jnp.asarray(x[:1]), name="fog", severity=1)


def test_unit_range_accepts_bounds_and_skips_tracers():
  check_unit_range("x", jnp.array([0.0, 1.0]))
  check_unit_range("x", np.zeros((0, 3), np.float32))
  # Under jit the values are unknown: no error, no host sync (documented in the helper).
  out = jax.jit(lambda z: (check_unit_range("x", z), z * 2)[1])(jnp.float32(300.0))
  assert float(out) == 600.0


def test_npz_declared_classes_and_single_channel_load(tmp_path):
  im = np.zeros((6, 4, 4), np.uint8)  # single-channel [N, H, W]
  np.savez(tmp_path / "train.npz", images=im, labels=np.array([0, 1, 0, 1, 0, 7]),
           num_classes=np.int64(10))
  np.savez(tmp_path / "test.npz", images=im[..., None], labels=np.array([9, 0, 1, 2, 3, 4]))
  train, test = registry.load_train_test(f"npz:{tmp_path}")
  assert train.num_classes == test.num_classes == 10
  assert train.images.shape == test.images.shape == (6, 4, 4, 3)  # repeated to RGB
