r"""The robustness-cost study (issue #17): which methods survive APGD, APGD-T and Square, and
what the W-DRO penalty's gradient modes cost. Resumable, one workdir per run.

  python -m experiments.robustness_study --data_dir=../shared/data --root=runs/robustness \
      --scale=gpu --seeds=0,1,2

Fashion-MNIST (the 30k training images of ``fashion_mnist_train.npz``), one model per run:

* ``methods``: ``erm``, ``dro`` at rho 0.02 / 0.08 / 0.3, ``dro_mixup``, ``pgd_at``, ``trades``
  (methods this checkout does not have are listed as missing in the report, not run);
* ``modes``: ``dro`` at rho 0.08 with ``method_config.penalty_mode`` ``exact``,
  ``forward_over_reverse``, ``finite_difference``, and ``penalty_subsample`` 0.25 and 0.1;
* evaluation on a fixed random subset of ``test_images`` test images: clean, PGD-20 (random start, step
  eps/8), and the suite (APGD-CE, then APGD-T with 9 targets, then Square, each only on the
  images still correct), at eps 4/255, 8/255, 16/255. The suite's first column is APGD-CE
  alone (it runs first on every clean-correct image);
* cost: each run's training wall time (``train_seconds``, compilation included).

The report (``ROOT/report/robustness.md``, ``summary.json``, ``suite_vs_time.png``) gives the
mean and a 95 % t-interval over seeds per run, and plots the suite's robust accuracy at 8/255
against training time for the penalty modes (and erm / dro for reference). ``--scale`` picks
the sizes (``SCALES``); ``--width``, ``--epochs``, ``--train``, ``--test_images``,
``--apgd_steps``, ``--square_queries``, ``--model``, ``--eps`` override single fields; ``--runs``
picks runs by name; ``--shard=I/N`` runs the I-th of N cost-balanced shares (N processes on
one device: ``experiments/robustness_study_gpu.sh``).
Re-running skips finished runs; ``--report_only`` rewrites the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from absl import flags

from experiments import cli, flag_defs, launch, multi, studies
from experiments.studies import RunSpec
from experiments.formatting import ci_cell, mean_ci

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The CLI's flags, defined only when run as a program: importing the module (for
  ``plan`` or ``write_report``) beside another CLI module (``experiments.reproduce`` also
  has ``--root``) must not collide in absl's global flag registry."""
  flags.DEFINE_string("root", None, "Root directory of the study (one workdir per run).")
  flags.DEFINE_string("data_dir", None, "Folder with fashion_mnist_{train,test}.npz "
                      "(default $DROJAX_DATA_DIR).")
  flags.DEFINE_string("scale", "gpu", "smoke | cpu | gpu (see SCALES)")
  flags.DEFINE_string("seeds", "0,1,2", "Comma-separated training seeds.")
  flags.DEFINE_string("studies", "methods,modes", "Comma-separated: methods, modes.")
  flags.DEFINE_string("runs", None, "Only these run names (comma-separated, e.g. erm,dro_rho0.08,"
                      "mode_exact); default all of the studies'.")
  flags.DEFINE_string("model", None, "Override the scale's model (small_cnn | preact_resnet18).")
  flags.DEFINE_integer("width", None, "Override the scale's model width.")
  flags.DEFINE_integer("epochs", None, "Override the scale's epochs.")
  flags.DEFINE_integer("train", None, "Override the scale's training subset (0 = all 30k).")
  flags.DEFINE_integer("test_images", None, "Override the scale's number of test images.")
  flags.DEFINE_integer("apgd_steps", None, "Override the scale's APGD steps.")
  flags.DEFINE_integer("square_queries", None, "Override the scale's Square queries.")
  flags.DEFINE_string("eps", None, "Override the budgets attacked: a subset of 4,8,16 (1/255).")
  flags.DEFINE_string("shard", None, "I/N: run only the I-th of N cost-balanced shares of the "
                      "planned runs (0 <= I < N), for N processes sharing one device.")
  flags.DEFINE_bool("report_only", False, "Only (re)write the report from the finished runs.")
  flags.DEFINE_string("compilation_cache_dir", None, "JAX compilation cache ('none' off).")


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


@dataclasses.dataclass(frozen=True)
class Scale:
  model: str
  width: int
  epochs: int
  train: int  # 0 = all 30k
  test_images: int
  apgd_steps: int
  square_queries: int
  batch_size: int = 128
  eval_batch: int = 500  # attack batch: the attacks' loops are sequential, so larger is faster
  eps: tuple[int, ...] = EPS  # in 1/255, a subset of EPS (the report's columns)


SCALES = {
    # Seconds: tests.
    "smoke": Scale("small_cnn", 4, 1, 64, 16, 2, 10, batch_size=32),
    # A few CPU-minutes per run on this 2-core machine (1 seed is what was run here).
    "cpu": Scale("small_cnn", 8, 2, 5000, 200, 20, 500),
    # The documented study, sized for one H100 (see docs/robustness.md for the estimate).
    "gpu": Scale("small_cnn", 16, 5, 0, 1000, 100, 5000, eval_batch=1000),
}


def _config(method: str, seed: int, scale: Scale, *, rho=None, method_fields=None):
  from experiments.configs import fashion_mnist_pgd as fm_config

  c = fm_config.make_config(method, preset="paper", dataset="fashion_mnist")
  with c.unlocked():
    c.model = scale.model
    c.width = scale.width
    c.num_epochs = scale.epochs
    c.train_subset = scale.train
    c.seed = seed
    c.batch_size = scale.batch_size
    c.progress = False
    c.eval.images = scale.test_images
    c.eval.batch_size = scale.eval_batch
    c.eval.corruption_names = ("none",)
    c.eval.adv_eps = tuple(e / 255 for e in scale.eps)
    c.eval.attack = "suite"
    c.eval.apgd_steps = scale.apgd_steps
    c.eval.square_queries = scale.square_queries
    c.checkpoint_every_steps = 10_000
    if rho is not None:
      c.method_config.rho = rho
    for k, v in (method_fields or {}).items():
      c.method_config[k] = v
  return c


def available_methods() -> set[str]:
  from drojax import methods

  return set(methods.method_names())


def plan(names, seeds, scale: Scale) -> tuple[list[RunSpec], list[str]]:
  """(runs, names of the requested runs whose method this checkout lacks)."""
  have = available_methods()
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


# Rough training cost per method (adversarial training runs a 10-step attack per step), to
# spread the expensive runs over the shards.
_COST = {"pgd_at": 3, "trades": 3, "erm": 1}


def shard(runs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
  """``studies.shard`` by the methods' rough training cost."""
  return studies.shard(runs, index, count, cost=lambda r: _COST.get(r.method, 2))


def _pgd_evaluation(trained, test_ds, *, images: int, batch_size: int, eps: tuple[int, ...]):
  """PGD-20 (random start, step eps/8) at ``eps`` (1/255) on the same test images as the
  suite."""
  from drojax import evaluate as ev
  from experiments import train

  n = min(images, len(test_ds)) if images else len(test_ds)
  acc = ev.adversarial_accuracy(train.bound_model(trained), test_ds.images[:n],
                                test_ds.labels[:n], eps=[e / 255 for e in eps],
                                num_steps=PGD_STEPS, key=jax_fold(3), batch_size=batch_size,
                                progress=False)
  return {"pgd20_accuracy": acc}


def jax_fold(i: int):
  import jax

  from drojax import evaluate as ev

  return jax.random.fold_in(ev.eval_key(), i)


def run_spec(spec: RunSpec, root: str, scale: Scale, data_dir: str | None, cache: str | None):
  """Trains and evaluates ``spec`` (plus PGD-20) and prints its headline numbers."""
  results = studies.train_run(
      spec, root, data_dir=data_dir, cache_dir=cache,
      extra_evaluation=lambda trained, test_ds: _pgd_evaluation(
          trained, test_ds, images=scale.test_images, batch_size=spec.config.eval.batch_size,
          eps=scale.eps))
  m, e = _metrics(results), 8 if 8 in scale.eps else scale.eps[0]
  print(f"{spec.tag}: train {m['train_s']:.0f} s; clean {100 * m['clean']:.1f}, PGD-20 {e}/255 "
        f"{100 * m[f'pgd{e}']:.1f}, suite {e}/255 {100 * m[f'suite{e}']:.1f}", flush=True)


# ------------------------------------------------------------------------------- report

def _metrics(r: dict[str, Any]) -> dict[str, float | None]:
  from drojax.evaluate import eps_key

  out: dict[str, float | None] = {"clean": r.get("clean_accuracy"),
                                  "train_s": r.get("train_seconds")}
  by = r.get("adversarial_by_attack") or {}
  for e in EPS:
    k = eps_key(e / 255)
    out[f"pgd{e}"] = (r.get("pgd20_accuracy") or {}).get(k)
    for a in ("apgd_ce", "apgd_t", "fab_t", "square"):
      out[f"{a}{e}"] = (by.get(a) or {}).get(k)
    out[f"suite{e}"] = out[f"square{e}"]  # runs from before FAB-T have no fab_t column
  return out


def _pct(cell) -> str:
  return ci_cell(cell, missing="-")


def _seconds(cell) -> str:
  return ci_cell(cell, scale=1.0, digits=1, missing="-")


def write_report(runs: list[RunSpec], root: str, out_dir: str, *, missing: list[str],
                 scale_name: str, scale: Scale, wall_s: float | None = None) -> str:
  """Writes robustness.md, summary.json and suite_vs_time.png; returns the markdown path."""

  os.makedirs(out_dir, exist_ok=True)
  rows: dict[tuple[str, str], list[dict]] = {}
  for spec in runs:
    p = os.path.join(spec.workdir(root), "results.json")
    if os.path.isfile(p):
      with open(p) as f:
        rows.setdefault((spec.study, spec.name), []).append(_metrics(json.load(f)))
  names = []
  for spec in runs:
    if (spec.study, spec.name) not in names:
      names.append((spec.study, spec.name))
  summary: dict[str, Any] = {"scale": scale_name, "sizes": dataclasses.asdict(scale),
                             "missing_methods": missing, "runs": {}}
  cols = (["clean"] + [f"pgd{e}" for e in EPS] + [f"apgd_ce{e}" for e in EPS] +
          [f"suite{e}" for e in EPS])
  heads = (["clean"] + [f"PGD-20 {e}/255" for e in EPS] + [f"APGD-CE {e}/255" for e in EPS] +
           [f"suite {e}/255" for e in EPS])
  lines = ["# Robustness study: report", "",
           f"Scale `{scale_name}`: {json.dumps(dataclasses.asdict(scale))}; PGD-{PGD_STEPS} "
           "(random start, step eps/8); the suite is APGD-CE, APGD-T (9 targets), Square, each "
           "on the images still correct (cumulative; the last is the worst case). Accuracy in %, "
           "mean +- 95 % t-interval half-width over seeds (n = seeds finished). Train s is "
           "wall time with compilation; when several processes shared the device it includes "
           "their load.", ""]
  if missing:
    lines += [f"Not run (method missing in this checkout): {', '.join(missing)}.", ""]
  if wall_s is not None:
    lines += [f"Wall time of this invocation: {wall_s:.0f} s.", ""]
  for study in ("methods", "modes"):
    sel = [n for n in names if n[0] == study]
    if not sel:
      continue
    lines += [f"## {study}", "", "| run | n | " + " | ".join(heads) + " | train s |",
              "|---|---|" + "---|" * (len(cols) + 1)]
    for key in sel:
      ms = rows.get(key, [])
      cells = {c: mean_ci([m[c] for m in ms if m.get(c) is not None]) for c in cols + ["train_s"]}
      summary["runs"][f"{key[0]}/{key[1]}"] = {
          c: {"mean": v[0], "half_width": v[1], "n": v[2]} for c, v in cells.items()}
      ts = cells["train_s"]
      lines.append(f"| {key[1]} | {len(ms)} | " + " | ".join(_pct(cells[c]) for c in cols) +
                   f" | {_seconds(ts)} |")
    lines.append("")
  # Which attack broke what, at 8/255.
  lines += ["## The suite, attack by attack (8/255)", "",
            "| run | clean | after APGD-CE | after APGD-T | after FAB-T | after Square |",
            "|---|---|---|---|---|---|"]
  for key in names:
    ms = rows.get(key, [])
    if not ms:
      continue
    lines.append(f"| {key[0]}/{key[1]} | " + " | ".join(
        _pct(mean_ci([m[c] for m in ms if m.get(c) is not None]))
        for c in ("clean", "apgd_ce8", "apgd_t8", "fab_t8", "square8")) + " |")
  lines.append("")
  png = os.path.join(out_dir, "suite_vs_time.png")
  pts = []
  for key in names:
    if key[0] == "modes" or key[1] in ("erm", "dro_rho0.08"):
      ms = rows.get(key, [])
      t = mean_ci([m["train_s"] for m in ms if m.get("train_s") is not None])
      a = mean_ci([m["suite8"] for m in ms if m.get("suite8") is not None])
      if t[2] and a[2]:
        pts.append((key[1], t, a))
  if pts:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, t, a in pts:
      ax.errorbar(t[0], 100 * a[0], xerr=t[1] or 0, yerr=100 * (a[1] or 0), fmt="o",
                  capsize=3, label=label)
    ax.set_xlabel("training wall time (s, compilation included)")
    ax.set_ylabel("suite robust accuracy at 8/255 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    lines += ["![suite robust accuracy vs training time](suite_vs_time.png)", ""]
  md = os.path.join(out_dir, "robustness.md")
  with open(md, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1, default=str)
  return md


# ------------------------------------------------------------------------------- main

def _scale() -> Scale:
  s = SCALES[FLAGS.scale]
  over = {"model": FLAGS.model, "width": FLAGS.width, "epochs": FLAGS.epochs,
          "train": FLAGS.train, "test_images": FLAGS.test_images,
          "apgd_steps": FLAGS.apgd_steps, "square_queries": FLAGS.square_queries}
  over = {k: v for k, v in over.items() if v is not None}
  for k, v in over.items():
    if k != "model" and (v < 0 or (v < 1 and k not in ("train",))):
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
  return dataclasses.replace(s, **over)


def main(argv, overrides):
  del argv
  if overrides:
    raise cli.UsageError("robustness_study takes no --config.* overrides; use its flags")
  if not FLAGS.root:
    raise cli.UsageError("--root is required")
  flag_defs.check_choice(FLAGS.scale, list(SCALES), "--scale")
  scale = _scale()
  names = multi.parse_list(FLAGS.studies, "--studies")
  for s in names:
    flag_defs.check_choice(s, ["methods", "modes"], "--studies")
  runs, missing = plan(names, studies.parse_seeds(FLAGS.seeds), scale)
  if FLAGS.runs:
    wanted = multi.parse_list(FLAGS.runs, "--runs")
    known = [n for n, _, _ in METHOD_RUNS] + [n for n, _ in MODE_RUNS]
    for name in wanted:
      flag_defs.check_choice(name, known, "--runs")
    runs = [r for r in runs if r.name in wanted]
    missing = [m for m in missing if m in wanted]
  if FLAGS.shard:
    index, count = studies.parse_shard(FLAGS.shard)
    if not FLAGS.report_only:
      runs = shard(runs, index, count)
  root = os.path.abspath(FLAGS.root)
  report_dir = os.path.join(root, "report")
  if FLAGS.report_only:
    md = write_report(runs, root, report_dir, missing=missing, scale_name=FLAGS.scale,
                      scale=scale)
    print(f"report: {md}")
    return
  import jax

  from experiments import train

  studies.validate_all(runs)  # a bad value fails here, not an hour in
  data_dir = train.resolve_data_dir(FLAGS.data_dir, runs[0].config) if runs else None
  cache = FLAGS.compilation_cache_dir
  launch.enable_compilation_cache(cache if cache is not None else "~/.cache/drojax/jax")
  if missing:
    print(f"missing methods (not run): {', '.join(missing)}", flush=True)
  print(f"{len(runs)} runs on {jax.devices()[0].device_kind}; root {root}", flush=True)
  start = time.monotonic()
  studies.work(runs, root, lambda spec: run_spec(spec, root, scale, data_dir, cache),
               log=lambda m: print(f"{m}; elapsed {time.monotonic() - start:.0f} s", flush=True))
  if FLAGS.shard:  # the other shards may still run: one --report_only call writes the report
    print(f"shard {FLAGS.shard} done in {time.monotonic() - start:.0f} s; write the report with "
          f"--report_only once every shard has finished", flush=True)
    return
  md = write_report(runs, root, report_dir, missing=missing, scale_name=FLAGS.scale,
                    scale=scale, wall_s=time.monotonic() - start)
  print(f"report: {md}")


if __name__ == "__main__":
  _define_flags()
  cli.run_main(main)
