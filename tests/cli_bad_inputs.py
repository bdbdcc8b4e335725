"""The CLI bad-input table (issue 15) and its runner (not a test module).

``python tests/cli_bad_inputs.py ROOT OUT.json`` runs every case of ``CASES`` in THIS process
through ``experiments.cli.run_main(experiments.cifar_c.main, argv)`` -- one interpreter, one
JAX import, nothing compiled: every case fails in validation, data loading or the workdir
set-up, before training -- and writes ``[{id, code, stderr, config_json, leftovers}]``.
``tests/test_cli.py`` runs it once and checks each row. (``run_main`` changes process globals
-- absl's flags, the SIGTERM handler, the asyncio loop policy -- so the table runs apart from
the pytest process.)

A case: ``(id, extra argv, expected exit code, phrase of the one stderr line, setup)``. ``setup``
names a function below that prepares files or faults; argv may use ``{data}`` (a folder of
prepared ``.npz`` files) and ``{root}`` (the case's own folder). Every case runs with a fresh
``--workdir={root}/w`` unless it passes its own.
"""

import errno
import json
import os
import sys

BASE = ["--preset=quick", "--dataset=digits", "--method=erm", "--compilation_cache_dir=none"]

CASES = [
    # --- flags
    ("method_unknown", ["--method=nope"], 2, "--method: unknown value 'nope'", None),
    ("method_typo", ["--method=dro_augmx"], 2, "Did you mean 'dro_augmix'", None),
    ("dataset_typo", ["--dataset=cifar1O"], 2, "--dataset: unknown dataset 'cifar1O'", None),
    ("preset_unknown", ["--preset=fast"], 2, "unknown --preset 'fast'", None),
    ("eval_corruptions_unknown", ["--eval_corruptions=made_up"], 2,
     "unknown --eval_corruptions 'made_up'", None),
    ("unknown_flag", ["--nosuchflag"], 2, "nosuchflag", None),
    ("positional_argument", ["stray"], 2, "unexpected arguments: stray", None),
    ("workdir_missing", ["--workdir="], 2, "--workdir is required", None),
    # --- config fields: names and parsing
    ("field_typo", ["--config.num_epoch=1"], 2, "Did you mean 'num_epochs'", None),
    ("nested_field_typo", ["--config.method_config.rh0=1"], 2, "Did you mean 'rho'", None),
    ("group_as_field", ["--config.eval=1"], 2, "'eval' is a group", None),
    ("field_without_value", ["--config.seed"], 2, "needs a value", None),
    ("int_field_text", ["--config.batch_size=big"], 2,
     "--config.batch_size: expected an integer >= 1, got 'big'", None),
    ("int_field_float", ["--config.seed=1.5"], 2, "--config.seed: expected an integer", None),
    ("bool_field_text", ["--config.nesterov=maybe"], 2, "expected true/false", None),
    # --- choices (never a silent default)
    ("optimizer_nonsense", ["--config.optimizer=nonsense"], 2,
     "--config.optimizer: unknown value 'nonsense'; expected one of sgd, adam", None),
    ("lr_schedule_typo", ["--config.lr_schedule=cos"], 2, "Did you mean 'cosine'", None),
    ("model_unknown", ["--config.model=resnet"], 2, "--config.model: unknown value 'resnet'",
     None),
    ("penalty_mode_typo", ["--method=dro", "--config.method_config.penalty_mode=finite_diff"], 2,
     "Did you mean 'finite_difference'", None),
    ("corruption_name_typo", ["--config.eval.corruption_names=fgo"], 2, "Did you mean 'fog'",
     None),
    # --- ranges (late in the engine or at trace time before issue 15)
    ("momentum_above_1", ["--config.momentum=1.5"], 2,
     "--config.momentum: expected a finite number >= 0 and < 1, got 1.5", None),
    ("seed_negative", ["--config.seed=-1"], 2, "--config.seed: expected an integer >= 0", None),
    ("weight_decay_negative", ["--config.weight_decay=-1"], 2, "--config.weight_decay", None),
    ("learning_rate_zero", ["--config.learning_rate=0"], 2,
     "--config.learning_rate: expected a finite number > 0", None),
    ("learning_rate_inf", ["--config.learning_rate=inf"], 2, "--config.learning_rate", None),
    ("num_epochs_zero", ["--config.num_epochs=0"], 2, "--config.num_epochs", None),
    ("width_zero", ["--config.width=0"], 2, "--config.width: expected an integer >= 1", None),
    ("label_smoothing_one", ["--config.method_config.label_smoothing=1"], 2, "< 1", None),
    ("cvar_alpha_zero", ["--method=cvar", "--config.method_config.cvar_alpha=0"], 2,
     "--config.method_config.cvar_alpha: expected a finite number > 0 and <= 1", None),
    ("kl_temperature_zero", ["--method=kl_dro", "--config.method_config.kl_temperature=0"], 2,
     "--config.method_config.kl_temperature", None),
    ("q_below_one", ["--method=dro", "--config.method_config.q=0.5"], 2,
     "--config.method_config.q: expected a number >= 1", None),
    ("rho_nan", ["--method=dro", "--config.method_config.rho=nan"], 2,
     "--config.method_config.rho: expected a finite number >= 0, got nan", None),
    ("norm_below_one", ["--method=dro", "--config.method_config.norm=l0.5"], 2,
     "--config.method_config.norm: norm must be 'l1', 'l2', 'linf' or 'l<p>'", None),
    ("norm_old_float", ["--method=dro", "--config.method_config.norm=2"], 2,
     "--config.method_config.norm: norm takes a string now", None),
    ("penalty_subsample_zero", ["--method=dro", "--config.method_config.penalty_subsample=0"],
     2, "--config.method_config.penalty_subsample", None),
    ("augmix_severity_zero", ["--method=augmix", "--config.method_config.augmix_severity=0"], 2,
     "--config.method_config.augmix_severity: expected an integer >= 1", None),
    ("var_dro_eps_max_negative", ["--method=var_dro", "--config.method_config.var_dro_eps_max=-1"],
     2, "--config.method_config.var_dro_eps_max", None),
    ("eval_batch_size_zero", ["--config.eval.batch_size=0"], 2, "--config.eval.batch_size", None),
    ("pgd_restarts_zero", ["--config.eval.pgd_restarts=0"], 2, "--config.eval.pgd_restarts",
     None),
    ("attack_unknown", ["--config.eval.attack=autoattack"], 2,
     "--config.eval.attack: unknown value 'autoattack'", None),
    # --- tuple fields: item types and values
    ("adv_eps_in_255_units", ["--config.eval.adv_eps=8"], 2, "write 8/255, not 8", None),
    ("eval_norm_unknown", ["--config.eval.norm=l1"], 2,
     "--config.eval.norm: unknown value 'l1'", None),
    ("adv_eps_bad_item", ["--config.eval.adv_eps=8/255,x"], 2,
     "--config.eval.adv_eps: item 1: expected", None),
    ("adv_eps_division_by_zero", ["--config.eval.adv_eps=1/0"], 2, "--config.eval.adv_eps",
     None),
    ("severities_out_of_range", ["--config.eval.severities=0,6"], 2,
     "--config.eval.severities: item 0: expected an integer >= 1 and <= 5", None),
    ("severities_repeated", ["--config.eval.severities=1,1"], 2, "no repeated items", None),
    # --- cross-field rules
    ("warmup_not_below_epochs", ["--config.num_epochs=3", "--config.warmup_epochs=3"], 2,
     "--config.warmup_epochs: must be < num_epochs (3), got 3 epochs", None),
    ("eps_min_above_eps_max", ["--method=var_dro", "--config.method_config.var_dro_eps_min=2"],
     2, "method_config.var_dro_eps_min: must be <= var_dro_eps_max (1), got 2", None),
    ("lr_min_above_lr", ["--config.lr_min=1"], 2, "--config.lr_min: must be <= learning_rate",
     None),
    ("none_with_names", ["--config.eval.corruption_names=none,fog"], 2,
     "cannot be combined", None),
    ("published_needs_cifar", ["--eval_corruptions=published"], 2,
     "'published' needs dataset cifar10 or cifar100", None),
    ("noisymix_dro_subsample", ["--method=dro_noisymix",
                                "--config.method_config.penalty_subsample=0.5"], 2,
     "must be 1.0 with 'dro_noisymix'", None),
    # --- group shift (issue 26): one line before anything is written
    ("group_dro_without_groups", ["--method=group_dro"], 2,
     "--method=group_dro needs group labels, but the training data digits/train has none",
     None),
    ("group_dro_step_size_zero", ["--method=group_dro",
                                  "--config.method_config.group_dro_step_size=0"], 2,
     "--config.method_config.group_dro_step_size: expected a finite number > 0, got 0.0", None),
    ("vrex_negative_penalty", ["--method=vrex", "--config.method_config.vrex_penalty_weight=-1"],
     2, "--config.method_config.vrex_penalty_weight: expected a finite number >= 0", None),
    ("jtt_lambda_up_below_one", ["--method=jtt", "--config.method_config.jtt_lambda_up=0.5"],
     2, "--config.method_config.jtt_lambda_up: expected a finite number >= 1, got 0.5", None),
    ("irm_one_environment_configured", ["--method=irm",
                                        "--config.method_config.num_environments=1"], 2,
     "irm compares environments: it needs at least 2, got num_environments=1", None),
    ("group_dro_empty_group", ["--method=group_dro", "--dataset=npz:{data}/gapgroups_train.npz"],
     2, "--method=group_dro: groups [1] of the 3 have no training example", "npz_files"),
    ("vrex_one_environment_in_data", ["--method=vrex",
                                      "--dataset=npz:{data}/onegroup_train.npz"], 2,
     "--method=vrex compares environments: it needs at least 2, the training data has 1",
     "npz_files"),
    # --- fields the method or set-up does not read
    ("rho_for_var_dro", ["--method=var_dro", "--config.method_config.rho=0.5"], 2,
     "--config.method_config.rho has no effect: method 'var_dro' does not read it", None),
    ("mixup_alpha_for_erm", ["--config.method_config.mixup_alpha=0.2"], 2,
     "method 'erm' does not read it", None),
    ("momentum_with_adam", ["--config.optimizer=adam", "--config.momentum=0.5"], 2,
     "--config.momentum has no effect: only optimizer=sgd reads it", None),
    ("published_dir_unused", ["--config.eval.published_dir=/x"], 2,
     "only eval.corruptions=published reads it", None),
    ("apgd_steps_with_pgd", ["--config.eval.apgd_steps=50"], 2,
     "--config.eval.apgd_steps has no effect: only eval.attack=apgd or suite", None),
    # --- data files (exit 2: the user chose the file)
    ("npz_missing", ["--dataset=npz:{root}/none_train.npz"], 2, "none_train.npz", None),
    ("npz_not_an_archive", ["--dataset=npz:{data}/junk_train.npz"], 2,
     "junk_train.npz: not a readable .npz archive", "npz_files"),
    ("npz_missing_key", ["--dataset=npz:{data}/nolabels_train.npz"], 2,
     "nolabels_train.npz: missing key(s) ['labels']", "npz_files"),
    ("npz_empty", ["--dataset=npz:{data}/empty_train.npz"], 2,
     "empty_train.npz: holds no examples", "npz_files"),
    ("npz_stray_label", ["--dataset=npz:{data}/stray_train.npz"], 2,
     "stray_train.npz: labels run up to 37, so 38 classes are inferred", "npz_files"),
    ("npz_test_label_outside", ["--dataset=npz:{data}/testout_train.npz"], 2,
     "testout_test.npz: labels must lie in [0, 3)", "npz_files"),
    ("npz_float_images", ["--dataset=npz:{data}/float_train.npz"], 2,
     "float_train.npz: images must be uint8", "npz_files"),
    ("npz_split_shapes_differ", ["--dataset=npz:{data}/shapes_train.npz"], 2,
     "differ in shape", "npz_files"),
    ("npz_single_class", ["--dataset=npz:{data}/oneclass_train.npz"], 2,
     "oneclass_train.npz: a classifier needs at least 2 classes, got 1", "npz_files"),
    ("npz_label_2_pow_40", ["--dataset=npz:{data}/huge_train.npz"], 2,
     "so 1099511627777 classes are inferred, but 1099511627773 of them have no example (3, 4, 5",
     "npz_files"),
    ("suite_on_3_classes", ["--dataset=npz:{data}/three_train.npz", "--config.eval.attack=suite",
                            "--config.batch_size=8"],
     2, "--config.eval.attack=suite cannot evaluate", "npz_files"),
    ("attack_without_eps", ["--config.eval.adv_eps=()", "--config.eval.attack=suite"], 2,
     "--config.eval.attack has no effect: no attack runs while eval.adv_eps is empty", None),
    ("dataset_not_found", ["--dataset=cifar100", "--data_dir={root}/empty"], 2,
     "dataset 'cifar100' not found", None),
    ("batch_larger_than_data", ["--config.batch_size=5000"], 2,
     "--config.batch_size=5000 is larger than the", None),
    # --- environment (exit 1)
    ("workdir_is_a_file", ["--workdir={root}/file"], 1, "exists and is not a directory",
     "workdir_file"),
    ("workdir_parent_is_a_file", ["--workdir={root}/file/sub"], 1,
     "a path component is not a directory", "workdir_file"),
    ("workdir_read_only", [], 1, "read-only file system", "read_only"),
    ("workdir_permission_denied", [], 1, "permission denied", "permission_denied"),
    ("workdir_disk_full", [], 1, "no space left on device (disk full)", "disk_full"),
    ("disk_full_during_training", [], 1, "disk full", "main_disk_full"),
    ("download_unreachable", [], 1, "network error while fetching data", "main_network"),
    ("ctrl_c", [], 130, "interrupted; the workdir keeps its last checkpoint", "main_interrupt"),
    ("distributed_variable", [], 2, "DROJAX_DISTRIBUTED must be 1 or 0", "distributed_env"),
]


# Inputs that are valid (documented as accepted) and must get through every check to training:
# the runner builds and initialises the model there, then stops (nothing is trained).
REACHES = [
    ("npz_single_channel", ["--dataset=npz:{data}/gray_train.npz", "--config.model=tiny"],
     "npz_files"),
    ("adv_eps_fraction", ["--config.eval.adv_eps=2/255,8/255", "--config.model=tiny"], None),
    ("l2_suite", ["--config.eval.norm=l2", "--config.eval.adv_eps=0.5,1.5",
                  "--config.eval.attack=suite", "--config.model=tiny"], None),
]


# ----------------------------------------------------------------------------------- set-ups

def npz_files(root, data, monkey):
  import numpy as np

  os.makedirs(data, exist_ok=True)
  im = np.zeros((8, 8, 8, 3), np.uint8)
  lab = np.arange(8) % 3

  def save(name, **arrays):
    np.savez(os.path.join(data, name), **arrays)

  with open(os.path.join(data, "junk_train.npz"), "wb") as f:
    f.write(b"not a zip file")
  save("nolabels_train.npz", images=im)
  save("empty_train.npz", images=im[:0], labels=lab[:0])
  save("stray_train.npz", images=im, labels=np.r_[lab[:7], 37])
  save("testout_train.npz", images=im, labels=lab)
  for name, groups in (("gapgroups", np.arange(8) % 2 * 2), ("onegroup", np.zeros(8, int))):
    for split in ("train", "test"):
      save(f"{name}_{split}.npz", images=im, labels=lab, groups=groups)
  save("testout_test.npz", images=im, labels=np.r_[lab[:7], 3])
  save("float_train.npz", images=im.astype(np.float32), labels=lab)
  for split in ("train", "test"):
    save(f"oneclass_{split}.npz", images=im, labels=np.zeros(8, np.int64))
    save(f"huge_{split}.npz", images=im, labels=np.r_[lab[:7], 2**40])
    save(f"three_{split}.npz", images=im, labels=lab)
  save("shapes_train.npz", images=im, labels=lab)
  save("shapes_test.npz", images=np.zeros((8, 4, 4, 3), np.uint8), labels=lab)
  gray = np.random.default_rng(0).integers(0, 256, (64, 16, 16), dtype=np.uint8)
  save("gray_train.npz", images=gray, labels=np.arange(64) % 4)
  save("gray_test.npz", images=gray[:16, ..., None], labels=np.arange(16) % 4)


def workdir_file(root, data, monkey):
  with open(os.path.join(root, "file"), "w") as f:
    f.write("a file, not a folder")


def _failing(err, target_name):
  def fail(*args, **kwargs):
    path = args[0] if args and isinstance(args[0], str) else target_name
    raise OSError(err, os.strerror(err), path)

  return fail


def read_only(root, data, monkey):
  monkey.append(("os.makedirs", _failing(errno.EROFS, "workdir")))


def permission_denied(root, data, monkey):
  monkey.append(("os.makedirs", _failing(errno.EACCES, "workdir")))


def disk_full(root, data, monkey):
  monkey.append(("json.dump", _failing(errno.ENOSPC, "config.json")))


def main_disk_full(root, data, monkey):
  def main(argv, overrides):  # what orbax does: the OSError arrives as the cause of another
    try:
      raise OSError(errno.ENOSPC, "No space left on device", f"{root}/w/checkpoints/5")
    except OSError as e:
      raise ValueError("checkpoint save failed") from e

  monkey.append(("main", main))


def main_network(root, data, monkey):
  def main(argv, overrides):  # what a download that cannot reach its server raises
    import urllib.error

    raise urllib.error.URLError(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))

  monkey.append(("main", main))


def main_interrupt(root, data, monkey):
  def main(argv, overrides):
    raise KeyboardInterrupt

  monkey.append(("main", main))


def distributed_env(root, data, monkey):
  monkey.append(("env", ("DROJAX_DISTRIBUTED", "2")))


# ------------------------------------------------------------------------------------ runner

def run_case(case, base_root):
  """Runs one case; ``case`` is ``(id, extra argv, ..., setup)`` (middle fields unused)."""
  import contextlib
  import io
  import json as json_module

  from experiments import cifar_c, cli

  case_id, extra, setup = case[0], case[1], case[-1]
  root = os.path.join(base_root, case_id)
  data = os.path.join(root, "data")
  os.makedirs(root)
  patches = []
  if setup:
    globals()[setup](root, data, patches)
  argv = ["cifar_c", f"--workdir={root}/w", *BASE]
  argv += [a.format(root=root, data=data) for a in extra]
  main = cifar_c.main
  undo = []
  for what, value in patches:
    if what == "main":
      main = value
    elif what == "env":
      undo.append(("env", value[0], os.environ.get(value[0])))
      os.environ[value[0]] = value[1]
    else:
      module = {"os": os, "json": json_module}[what.split(".")[0]]
      name = what.split(".")[1]
      undo.append((module, name, getattr(module, name)))
      setattr(module, name, value)
  err = io.StringIO()
  code = 0
  try:
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      cli.run_main(main, argv)
  except SystemExit as e:
    code = e.code
  except ReachedTraining as e:
    code = f"reached training: {e}"
  except Exception as e:  # noqa: BLE001  (reported as a failing row, not a crashed table)
    code = f"uncaught {type(e).__name__}: {e}"
  finally:
    for item in undo:
      if item[0] == "env":
        if item[2] is None:
          os.environ.pop(item[1], None)
        else:
          os.environ[item[1]] = item[2]
      else:
        setattr(item[0], item[1], item[2])
  workdir = os.path.join(root, "w")
  return {"id": case_id, "code": code, "stderr": err.getvalue(),
          "config_json": os.path.exists(os.path.join(workdir, "config.json")),
          "leftovers": sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []}


class ReachedTraining(Exception):
  """Raised instead of training: the case passed every check."""


def main():
  base_root, out = sys.argv[1], sys.argv[2]
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax
  import numpy as np

  from drojax import models
  from experiments import train

  def no_training(config, workdir, train_ds, *, mesh):  # build and initialise, never train
    model = models.get_model(config.model, num_classes=train_ds.num_classes, width=config.width)
    x = np.asarray(train_ds.images[:2], np.float32) / 255
    logits = model.apply(model.init(jax.random.key(0), x, train=False), x, train=False)
    raise ReachedTraining(f"images {train_ds.image_shape}, logits {tuple(logits.shape)}")

  train.train = no_training
  rows = [run_case(case, base_root) for case in CASES + REACHES]
  with open(out, "w") as f:
    json.dump(rows, f)


if __name__ == "__main__":
  main()
