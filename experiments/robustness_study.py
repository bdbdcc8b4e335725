r"""The robustness-cost study (issue #17, docs/robustness.md): which methods survive APGD,
APGD-T, FAB-T and Square, and what the W-DRO penalty's gradient modes cost.

  python -m experiments.robustness_study --data_dir=../shared/data --root=runs/robustness \
      --scale=gpu --seeds=0,1,2 --workers=6 --time_limit=520

Fashion-MNIST (the 30k training images of ``fashion_mnist_train.npz``), one model per run:
``methods`` (``METHOD_RUNS``; a method this checkout lacks is listed as missing, not run) and
``modes`` (``dro`` at rho ``MODE_RHO`` with each ``penalty_mode`` and ``penalty_subsample`` 0.25
and 0.1), evaluated on a fixed random subset of test images: clean, PGD-20 (random start, step
eps/8) and the suite (APGD-CE, APGD-T, FAB-T, Square, each on the images still correct) at eps
4, 8, 16 / 255, with each run's training wall time (compilation included). The report
(``ROOT/report/robustness.md``, ``summary.json``, ``suite_vs_time.png``) plots the suite's
robust accuracy at 8/255 against training time. ``--scale`` picks the sizes (``SCALES``); the
size flags (``SIZES``) override single ones. The rest is the study framework's
(``experiments.studies``): ``--workers`` share one GPU.
"""

from __future__ import annotations

import os
from typing import Any

from absl import flags

from experiments import cli, flag_defs, multi, studies
from experiments.studies import RunSpec, Scale

FLAGS = flags.FLAGS


# The study's own flags (the framework's: studies.flags_of): each overrides one size of the scale.
SIZES = {"model": ("string", "model (small_cnn | preact_resnet18)"),
         "width": ("integer", "model width"), "epochs": ("integer", "epochs"),
         "train": ("integer", "training subset (0 = all 30k)"),
         "test_images": ("integer", "number of test images"),
         "apgd_steps": ("integer", "APGD steps"), "square_queries": ("integer", "Square queries"),
         "eps": ("string", "budgets attacked: a subset of 4,8,16 (1/255)")}
OWN_FLAGS = {k: (kind, None, f"Override the scale's {what}.") for k, (kind, what) in SIZES.items()}


EPS = (4, 8, 16)  # in 1/255
PGD_STEPS = 20
METHOD_RUNS = (("erm", "erm", None), ("dro_rho0.02", "dro", 0.02), ("dro_rho0.08", "dro", 0.08),
               ("dro_rho0.3", "dro", 0.3), ("dro_mixup", "dro_mixup", None),
               ("pgd_at", "pgd_at", None), ("trades", "trades", None))
MODE_RUNS = (("mode_exact", {"penalty_mode": "exact"}),
             ("mode_forward_over_reverse", {"penalty_mode": "forward_over_reverse"}),
             ("mode_finite_difference", {"penalty_mode": "finite_difference"}),
             ("mode_subsample0.25", {"penalty_subsample": 0.25}),
             ("mode_subsample0.1", {"penalty_subsample": 0.1}))
MODE_RHO = 0.08
PARTS = ("methods", "modes")


# train: 0 = all 30k; eval_batch: the attacks' batch (their loops are sequential, so larger is
# faster); eps: in 1/255, a subset of EPS (the report's columns).
SCALES = {
    # Seconds: tests.
    "smoke": Scale(model="small_cnn", width=4, epochs=1, train=64, test_images=16, apgd_steps=2,
                   square_queries=10, batch_size=32, eval_batch=500, eps=EPS),
    # A few CPU-minutes per run on this 2-core machine (1 seed is what was run here).
    "cpu": Scale(model="small_cnn", width=8, epochs=2, train=5000, test_images=200,
                 apgd_steps=20, square_queries=500, batch_size=128, eval_batch=500, eps=EPS),
    # The documented study, sized for one H100 (see docs/robustness.md for the estimate).
    "gpu": Scale(model="small_cnn", width=16, epochs=5, train=0, test_images=1000,
                 apgd_steps=100, square_queries=5000, batch_size=128, eval_batch=1000, eps=EPS),
}


def _config(method: str, seed: int, scale: Scale, *, rho=None, method_fields=None):
  fields = {"model": scale.model, "width": scale.width, "num_epochs": scale.epochs,
            "train_subset": scale.train, "batch_size": scale.batch_size,
            "eval.images": scale.test_images, "eval.batch_size": scale.eval_batch,
            "eval.corruption_names": ("none",), "eval.adv_eps": tuple(e / 255 for e in scale.eps),
            "eval.attack": "suite", "eval.apgd_steps": scale.apgd_steps,
            "eval.square_queries": scale.square_queries, "checkpoint_every_steps": 10_000,
            "method_config.rho": rho}
  fields.update({f"method_config.{k}": v for k, v in (method_fields or {}).items()})
  return studies.preset("fashion_mnist_pgd", method, "fashion_mnist", seed, fields)


def plan(names, seeds, scale: Scale) -> tuple[list[RunSpec], list[str]]:
  """(runs, names of the requested runs whose method this checkout lacks)."""
  from drojax import methods

  have = set(methods.method_names())
  runs, missing = [], []
  for seed in seeds:
    if "methods" in names:
      for name, method, rho in METHOD_RUNS:
        if method not in have:
          if name not in missing:
            missing.append(name)
          continue
        runs.append(RunSpec("methods", name, method, seed, _config(method, seed, scale, rho=rho)))
    if "modes" in names:
      for name, fields in MODE_RUNS:
        runs.append(RunSpec("modes", name, "dro", seed,
                            _config("dro", seed, scale, rho=MODE_RHO, method_fields=fields)))
  return runs, missing


def cost(spec: RunSpec) -> float:
  """Rough training cost per method (adversarial training runs a 10-step attack per step), to
  spread the expensive runs over the shards."""
  return {"pgd_at": 3, "trades": 3, "erm": 1}.get(spec.method, 2)


def _pgd_evaluation(trained, test_ds, *, batch_size: int, eps: tuple[int, ...]):
  """PGD-20 (random start, step eps/8) at ``eps`` (1/255) on the test images the suite attacks
  (``test_ds``: the configured ``eval.images`` subset)."""
  import jax

  from drojax import evaluate as ev
  from experiments import train

  acc = ev.adversarial_accuracy(train.bound_model(trained), test_ds.images, test_ds.labels,
                                eps=[e / 255 for e in eps], num_steps=PGD_STEPS,
                                key=jax.random.fold_in(ev.eval_key(), 3), batch_size=batch_size,
                                progress=False)
  return {"pgd20_accuracy": acc}


def run_spec(spec: RunSpec, root: str, scale: Scale, data_dir: str | None, cache: str | None):
  """Trains and evaluates ``spec`` (plus PGD-20); returns its headline numbers."""
  results = studies.train_run(
      spec, root, data_dir=data_dir, cache_dir=cache,
      extra_evaluation=lambda trained, test_ds: _pgd_evaluation(
          trained, test_ds, batch_size=spec.config.eval.batch_size, eps=scale.eps))
  m, e = _metrics(results), 8 if 8 in scale.eps else scale.eps[0]
  return (f"train {m['train_seconds']:.0f} s; clean {100 * m['clean']:.1f}, PGD-20 {e}/255 "
          f"{100 * m[f'pgd{e}']:.1f}, suite {e}/255 {100 * m[f'suite{e}']:.1f}")


# ------------------------------------------------------------------------------- report

ATTACKS = (("apgd_ce", "APGD-CE"), ("apgd_t", "APGD-T"), ("fab_t", "FAB-T"), ("square", "Square"))
COLUMNS = ([("clean", "clean")] + [(f"pgd{e}", f"PGD-20 {e}/255") for e in EPS] +
           [(f"apgd_ce{e}", f"APGD-CE {e}/255") for e in EPS] +
           [(f"suite{e}", f"suite {e}/255") for e in EPS])


def _metrics(r: dict[str, Any]) -> dict[str, float | None]:
  from drojax.evaluate import eps_key

  out: dict[str, float | None] = {"clean": r.get("clean_accuracy"),
                                  "train_seconds": r.get("train_seconds")}
  by = r.get("adversarial_by_attack") or {}
  for e in EPS:
    k = eps_key(e / 255)
    out[f"pgd{e}"] = (r.get("pgd20_accuracy") or {}).get(k)
    for a, _ in ATTACKS:
      out[f"{a}{e}"] = (by.get(a) or {}).get(k)
    out[f"suite{e}"] = out[f"square{e}"]  # runs from before FAB-T have no fab_t column
  return out


def _note(scale: Scale) -> str:
  return (f"Sizes: {vars(scale)}; PGD-{PGD_STEPS} (random start, step eps/8); "
          "the suite is APGD-CE, APGD-T (9 targets), FAB-T, Square, each on the images still "
          "correct (cumulative; the last is the worst case).")


def sections(report) -> list[str]:
  """Per study its table; the suite attack by attack at 8/255; suite accuracy vs train time."""
  from experiments import reporting, study_report

  lines = []
  for part in (p for p in PARTS if p in report.names):
    lines += [f"## {part}", ""] + study_report.table(report.part(part), report.names[part],
                                                     COLUMNS, failed=report.failed_in(part))
  done = [n for part in report.names.values() for n in part
          if any(r["name"] == n for r in report.rows)]
  lines += ["## The suite, attack by attack (8/255)", "", "Each column: robust after that "
            "attack and every one to its left.", ""]
  lines += study_report.table(report.rows, done, [("clean", "clean")] +
                              [(f"{a}8", f"after {label}") for a, label in ATTACKS])
  pts = study_report.points(report.rows, [n for n in done if n.startswith("mode_") or n in (
      "erm", f"dro_rho{MODE_RHO:g}")], "train_seconds", "suite8", x_scale=1.0)
  if pts:
    reporting.scatter_plot(pts, os.path.join(report.out_dir, "suite_vs_time.png"),
                           xlabel="training wall time (s, compilation included)",
                           ylabel="suite robust accuracy at 8/255 (%)")
    lines += ["![suite robust accuracy vs training time](suite_vs_time.png)", ""]
  return lines


# ------------------------------------------------------------------------------- main

def _sized(s: Scale) -> Scale:
  """``s`` with the fields the study's flags override."""
  over = {k: FLAGS[k].value for k in SIZES if k != "eps" and FLAGS[k].value is not None}
  for k, v in over.items():
    if k != "model" and v < (0 if k == "train" else 1):
      raise cli.UsageError(f"--{k} must be >= 1 (--train >= 0), got {v}")
  if FLAGS.eps is not None:
    try:
      eps = tuple(sorted({int(e) for e in multi.parse_list(FLAGS.eps, "--eps")}))
    except ValueError:
      eps = ()
    if not eps or not set(eps) <= set(EPS):
      raise cli.UsageError(f"--eps must be a non-empty subset of {','.join(map(str, EPS))} "
                           f"(in 1/255); got {FLAGS.eps!r}")
    over["eps"] = eps
  return s.replace(**over)


STUDY = studies.Study(
    module="experiments.robustness_study", title="Robustness study: report", parts=PARTS,
    scales=SCALES, default_scale="gpu", plan=plan, run=run_spec, metrics=_metrics,
    sections=sections, note=_note, report_file="robustness.md", cost=cost, sized=_sized,
    flags=OWN_FLAGS)


@flag_defs.uses("data_dir", "compilation_cache_dir", own=studies.flags_of(STUDY))
def main(argv, overrides):
  studies.main(STUDY, argv, overrides)


if __name__ == "__main__":
  cli.run_main(main)
