"""Shared test set-up: a temporary home, strict rank promotion and the hypothesis profile."""

import atexit
import os
import shutil
import tempfile

# Tests run on the CPU; keep XLA from grabbing an accelerator a developer might have.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Tests write only under temporary directories: the CLIs' default compilation cache
# (~/.cache/drojax/jax), matplotlib's cache and config, tfds' default data directory all follow
# HOME / XDG_*, so they point into one temporary home for the session. Set before anything is
# imported; pytest-xdist workers and every subprocess inherit it (the first process creates it
# and removes it at exit). tests/test_imports.py checks it.
TEST_HOME_ENV = "DROJAX_TEST_HOME"
if TEST_HOME_ENV not in os.environ:
  os.environ["DROJAX_TEST_REAL_HOME"] = os.path.expanduser("~")
  os.environ[TEST_HOME_ENV] = tempfile.mkdtemp(prefix="drojax-test-home-")
  atexit.register(shutil.rmtree, os.environ[TEST_HOME_ENV], ignore_errors=True)
  for _var, _sub in (("HOME", ""), ("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_DATA_HOME", ".local/share"), ("MPLCONFIGDIR", ".config/matplotlib")):
    os.environ[_var] = os.path.join(os.environ[TEST_HOME_ENV], _sub)

import hypothesis  # noqa: E402
import jax  # noqa: E402

# Implicit broadcasting between arrays of different rank hides shape bugs: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "drojax",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile("drojax")


# ----------------------------------------------------------------- pytest-xdist: longest first
# CI runs `pytest -n 2`: the suite's wall time is its busier worker's. Most tests take well under
# a second, a few minutes; left in collection order, one of the long ones may start last and run
# alone at the end. So the long tests (seconds from a loaded whole-suite run) start
# first, each on the least busy worker, and the short ones fill the gaps. Order only: every test
# still runs, with the same fixtures.
_LONGEST_FIRST = (  # seconds: the whole suite at jax 0.10.2, -n 2, load average 5-14 (81 min)
    "tests/test_method_numerics.py::",  # 1406 (skips on other JAX versions)
    "tests/test_robustness_study.py::test_smoke_study_end_to_end",  # 538
    "tests/test_reproduce.py::test_reproduce_end_to_end",  # 516
    "tests/test_attacks_torch.py::test_robust_accuracies_agree_with_torchattacks",  # 428
    "tests/test_distributed.py::test_two_processes_match_one",  # 406
    "tests/test_attacks_torch.py::test_fab_t_agrees_with_torchattacks[linf]",  # 237 (alone)
    "tests/test_loop.py::test_sigkill_mid_epoch_then_resume",  # 174
    "tests/test_faults.py::test_ctrl_c_and_sigterm_during_saves_are_one_line",  # ~130 at load 12
    "tests/test_help.py::test_every_cli_answers_help",  # ~60 at load 12 (11 processes)
    "tests/test_cli_multi.py::test_sweep",  # 171
    "tests/test_api.py::test_doctests[drojax.attacks.",  # 165 (then one test)
    "tests/test_bf16.py::test_bf16_loss_and_gradients_close_to_float32[preact_resnet18",  # 141
    "tests/test_models.py::test_mixing_at_input_equals_mixing_the_pixels[preact",  # 136
    "tests/test_train.py::test_every_method_reduces_the_loss",  # 136
    "tests/test_cli_e2e.py::test_quick_preset_dro_augmix_resumes_after_sigkill",  # 132
    "tests/test_cli_e2e.py::test_quick_preset_erm_end_to_end",  # 108
    "tests/test_models.py::test_small_cnn_accepts_gray_and_rgb",  # 108
    "tests/test_attacks_torch.py::test_fab_t_agrees_with_torchattacks[l2]",  # 108 (alone)
    "tests/test_cli_multi.py::test_waterbirds",  # 107
    "tests/test_train.py::test_eight_devices_equal_one_device",  # 102
    "tests/test_bf16.py::test_bf16_train_step_keeps_float32_state",  # 99
    "tests/test_augment_methods.py::test_train_steps_reduce_the_loss[dro_noisymix]",  # 92
)


def _rank(item) -> int:
  nodeid = item.nodeid.replace("\\", "/")
  for i, prefix in enumerate(_LONGEST_FIRST):
    if nodeid.startswith(prefix) or ("/" + prefix) in nodeid:
      return i
  return len(_LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  items.sort(key=_rank)  # stable: everything else keeps pytest's order
  workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
  long = sum(_rank(item) < len(_LONGEST_FIRST) for item in items)
  if workers > 1 and long >= 2 * workers:
    # xdist's load scheduler (with --maxschedchunk=1, set below) first gives worker w the items
    # 2w and 2w + 1: pair the k-th longest with the (2W-1-k)-th, as longest-first would.
    first = items[:2 * workers]
    items[:2 * workers] = [first[j] for w in range(workers) for j in (w, 2 * workers - 1 - w)]


def pytest_configure(config):
  # One test at a time to whichever worker is free (xdist's default hands out chunks of
  # consecutive tests, which would give one worker all the long ones).
  if getattr(config.option, "maxschedchunk", "absent") is None:
    config.option.maxschedchunk = 1
