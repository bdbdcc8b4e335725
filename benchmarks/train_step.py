"""Train-step throughput of the drojax methods: img/s, ratio to ``erm``, compile time, memory.

Command-line contract (other tools call it)::

  python benchmarks/train_step.py --methods erm,dro --width 16 --batch 128 --json OUT.jsonl

appends one JSON object per method (and width) to ``OUT.jsonl`` with at least ``method``,
``penalty_mode``, ``width``, ``batch``, ``img_per_s``, ``step_ratio_to_erm``, ``compile_s`` and
``peak_rss_mb``, and prints a Markdown table.

Method specs (``--methods``, comma separated): a registered method name (``erm``, ``dro``,
``var_dro``, ``augmix``, ``dro_augmix``, ...), optionally followed by penalty options for the
W-DRO methods, separated by colons:

* ``dro`` or ``dro:exact``: the exact penalty gradient (grad of grad), the default;
* ``dro:forward_over_reverse``: the exact penalty gradient as a jvp of the gradient;
* ``dro:finite_difference``: the finite-difference penalty gradient;
* ``dro:subsample=0.25``: the penalty on a random quarter of the batch (exact gradient);
* ``dro:finite_difference:subsample=0.25``: both; the same options apply to ``dro_augmix`` etc.

Adversarial training (``pgd_at``, ``trades``, ``mart``) runs ``MethodConfig``'s ``adv_steps``
(10) inner steps; ``--adv_steps N`` changes it. A ``k``-step PGD-AT step is ``k`` forward/backward
passes of the attack plus one of training, about ``k + 1`` times an ``erm`` step.

``erm`` is always measured (the ratios are to it). All steps of one width are compiled first and
then timed in interleaved rounds (``erm, dro, ... , erm, dro, ...``, order rotated each round) so
that load from other processes hits all of them alike: on a shared machine compare the ratios,
not the absolute figures. ``--torch`` adds the PyTorch peer (``torch_reference.py``: plain,
double-backprop W-DRO, one PGD iteration) to the same rounds in the same process and reports
``jax_over_torch`` (our img/s divided by PyTorch's for the matching step).

What is timed: the jitted ``drojax.train.make_train_step`` step on one device (the mesh has all
local devices), state donated, on a fixed batch of random uint8 images (32x32x3, 10 classes),
without the random crop/flip (``--crop_flip`` adds it), float32 unless ``--dtype bfloat16``
(computation only; parameters and optimizer state stay float32).
``compile_s`` is the first call's time (trace + compile + one step) minus the median step time.
``peak_rss_mb`` is the process's peak resident memory from just before the first call through
the warm-up steps (Linux ``VmHWM``, reset per method; it includes the interpreter, the libraries
and the other methods' live states, ``peak_rss_delta_mb`` subtracts the resident size before the
first call). ``recompiles`` counts compilations after the first call (expected 0).

On an accelerator the same command runs unchanged (``JAX_PLATFORMS=cuda``); use a larger
``--iters`` there since steps are short.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(1, os.path.dirname(_HERE))  # the repository root, for `import drojax`
import _common  # noqa: E402  pylint: disable=wrong-import-position

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
DEFAULT_METHODS = "erm,dro,dro:finite_difference,dro:subsample=0.25,var_dro,augmix,dro_augmix"


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A method name with penalty options, parsed from ``name[:mode][:subsample=f]``."""

  spec: str
  name: str
  penalty_mode: str | None  # None for methods without a W-DRO penalty
  penalty_subsample: float | None


def parse_method_spec(spec: str, *, rho: float, q: float, adv_steps: int = 10):
  """Returns ``(MethodSpec, Method)`` for one ``--methods`` entry.

  Raises:
    ValueError: unknown method name or option.
  """
  from drojax import wdro as _wdro  # pylint: disable=import-outside-toplevel
  from drojax import methods as _methods  # pylint: disable=import-outside-toplevel

  parts = [p for p in spec.strip().split(":") if p]
  if not parts:
    raise ValueError(f"--methods: empty method spec in {spec!r}")
  name, options = parts[0], parts[1:]
  mode, subsample = "exact", 1.0
  for opt in options:
    if opt in _wdro.PENALTY_MODES:
      mode = opt
    elif opt.startswith("subsample="):
      subsample = float(opt.split("=", 1)[1])
    else:
      raise ValueError(f"--methods: unknown option {opt!r} in {spec!r}; expected one of "
                       f"{_wdro.PENALTY_MODES} or 'subsample=F' (0 < F <= 1)")
  config = _methods.MethodConfig(rho=rho, q=q, penalty_mode=mode, penalty_subsample=subsample,
                                 adv_steps=adv_steps)
  method = _methods.get_method(name, config)  # ValueError lists the valid names
  has_penalty = name == "dro" or name.startswith("dro_")  # the W-DRO methods
  if options and not has_penalty:
    raise ValueError(f"--methods: {name!r} has no W-DRO penalty; options {options} do not apply")
  return MethodSpec(spec=spec, name=name, penalty_mode=mode if has_penalty else None,
                    penalty_subsample=subsample if has_penalty else None), method


def _batch(batch_size: int, seed: int):
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  return {
      "image": rng.integers(0, 256, (batch_size,) + IMAGE_SHAPE, dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, (batch_size,), dtype=np.int32),
      "id": np.arange(batch_size, dtype=np.int32),
  }


class _StepRunner:
  """Holds one method's (donated) state and runs its jitted step on a fixed batch."""

  def __init__(self, spec: MethodSpec, method, *, width: int, batch_size: int, dtype,
               crop_flip: bool, seed: int, model_name: str = "preact_resnet18"):
    import jax  # pylint: disable=import-outside-toplevel
    from drojax import models as _models  # pylint: disable=import-outside-toplevel
    from drojax import data as _data  # pylint: disable=import-outside-toplevel
    from drojax import train as _train  # pylint: disable=import-outside-toplevel

    self.spec = spec
    mesh = _train.make_mesh()
    model = _models.get_model(model_name, num_classes=NUM_CLASSES, width=width,
                              dtype=dtype)
    optimizer = _train.make_optimizer(10_000)
    self.state = _train.create_train_state(jax.random.key(seed), model, optimizer, IMAGE_SHAPE,
                                           method=method, num_examples=batch_size, mesh=mesh)
    self.num_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(self.state.params))
    self.step = _train.make_train_step(method, model, mesh, optimizer=optimizer,
                                       crop_flip=crop_flip, donate=True)
    self.batch = _data.shard_batch(_batch(batch_size, seed), mesh)
    self._jax = jax
    self.metrics = None

  def __call__(self):
    self.state, self.metrics = self.step(self.state, self.batch)
    self._jax.block_until_ready(self.state)

  def cache_size(self) -> int | None:
    jitted = getattr(self.step, "jitted", self.step)
    try:
      return int(jitted._cache_size())  # pylint: disable=protected-access
    except AttributeError:
      return None


def run_width(specs, *, width: int, batch_size: int, dtype_name: str, iters: int, rounds: int,
              model_name: str = "preact_resnet18",
              warmup: int, crop_flip: bool, torch: bool, torch_threads: int, rho: float, q: float,
              seed: int = 0) -> list[dict]:
  """Compiles and times every method at one width; returns the JAX rows then the torch rows."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
  runners, first = {}, {}
  for spec, method in specs:
    rss_before = _common.current_rss_mb()
    with _common.PeakRss() as peak:
      runner = _StepRunner(spec, method, width=width, batch_size=batch_size, dtype=dtype,
                           model_name=model_name,
                           crop_flip=crop_flip, seed=seed)
      start = time.perf_counter()
      runner()
      first_s = time.perf_counter() - start
      for _ in range(warmup):
        runner()
    runners[spec.spec] = runner
    first[spec.spec] = (first_s, peak.peak_mb, peak.peak_mb - rss_before)
    _common.log(f"width={width} {spec.spec}: first call {first_s:.1f} s, "
                f"peak RSS {peak.peak_mb:.0f} MiB")

  fns = dict(runners)
  torch_fns = {}
  if torch:
    import torch_reference  # pylint: disable=import-outside-toplevel
    if torch_reference.torch_available():
      import torch as _torch  # pylint: disable=import-outside-toplevel
      _torch.set_num_threads(torch_threads)
      steps, torch_params = torch_reference.make_steps(width, batch_size, rho=rho, q=q,
                                                       channels_last=False, seed=seed)
      for name, fn in steps.items():
        torch_fns[f"torch:{name}"] = fn
        fn()  # first call outside the timed rounds
      fns.update(torch_fns)
    else:
      _common.log("train_step: --torch given but PyTorch is not installed; skipping the peer "
                  "(pip install torch==2.13.0)")

  timings = _common.time_interleaved(fns, iters=iters, rounds=rounds, warmup=0)
  erm_s = timings["erm"].median_s
  torch_img = {k.split(":", 1)[1]: batch_size / t.median_s for k, t in timings.items()
               if k.startswith("torch:")}
  info = _common.machine_info()
  date = _common.utc_now()
  rows = []
  for spec, _ in specs:
    t = timings[spec.spec]
    runner = runners[spec.spec]
    first_s, peak_mb, delta_mb = first[spec.spec]
    cache = runner.cache_size()
    peer = {"erm": "erm", "dro": "dro"}.get(spec.name) if spec.penalty_mode in (None, "exact") \
        and spec.penalty_subsample in (None, 1.0) else None
    torch_peer = torch_img.get(peer) if peer else None
    img_per_s = t.per_second(batch_size)
    rows.append({
        "framework": "jax",
        "method": spec.name,
        "method_spec": spec.spec,
        "penalty_mode": spec.penalty_mode,
        "penalty_subsample": spec.penalty_subsample,
        "width": width,
        "batch": batch_size,
        "dtype": dtype_name,
        "params": runner.num_params,
        "img_per_s": img_per_s,
        "img_per_s_best": t.per_second(batch_size, use="min"),
        "step_ms": 1000 * t.median_s,
        "step_ratio_to_erm": t.median_s / erm_s,
        "compile_s": max(first_s - t.median_s, 0.0),
        "first_call_s": first_s,
        "peak_rss_mb": peak_mb,
        "peak_rss_delta_mb": delta_mb,
        "recompiles": None if cache is None else cache - 1,
        "torch_peer_step": peer if torch_peer else None,
        "torch_img_per_s": torch_peer,
        "jax_over_torch": img_per_s / torch_peer if torch_peer else None,
        "crop_flip": crop_flip,
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir or None,
        "rho": rho if spec.penalty_mode else None,
        "q": q if spec.penalty_mode else None,
        "rounds": rounds,
        "iters": iters,
        "samples_ms": [round(1000 * s, 2) for s in t.samples_s],
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "jax_version": jax.__version__,
        "date": date,
        **info,
    })
  for key in torch_fns:
    t = timings[key]
    step = key.split(":", 1)[1]
    rows.append({
        "framework": "torch",
        "method": f"torch:{step}",
        "method_spec": key,
        "penalty_mode": "exact" if step == "dro" else None,
        "width": width,
        "batch": batch_size,
        "dtype": "float32",
        "params": torch_params,
        "img_per_s": t.per_second(batch_size),
        "img_per_s_best": t.per_second(batch_size, use="min"),
        "step_ms": 1000 * t.median_s,
        "step_ratio_to_erm": t.median_s / timings["torch:erm"].median_s,
        "threads": torch_threads,
        "rho": rho if step == "dro" else None,
        "q": q if step == "dro" else None,
        "rounds": rounds,
        "iters": iters,
        "samples_ms": [round(1000 * s, 2) for s in t.samples_s],
        "date": date,
        **info,
    })
  return rows


COLUMNS = ("framework", "method_spec", "width", "batch", "img_per_s", "step_ms",
           "step_ratio_to_erm", "jax_over_torch", "compile_s", "peak_rss_mb", "recompiles")


def _int_list(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:
    cores = os.cpu_count() or 1
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--methods", default=DEFAULT_METHODS,
                 help=f"comma list of method specs (default: {DEFAULT_METHODS})")
  p.add_argument("--width", type=_int_list, default=[16], help="comma list of widths (16,64)")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--model", default="preact_resnet18",
                 help="a drojax.models name (small_cnn for the Fashion-MNIST setting)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="model computation dtype (parameters/optimizer state stay float32)")
  p.add_argument("--iters", type=int, default=3, help="steps per method per round")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
  p.add_argument("--warmup", type=int, default=1, help="untimed steps after the first call")
  p.add_argument("--rho", type=float, default=1.0)
  p.add_argument("--q", type=float, default=1.0)
  p.add_argument("--adv_steps", type=int, default=10,
                 help="inner PGD steps of pgd_at, trades, mart")
  p.add_argument("--crop_flip", action="store_true", help="include the on-device crop/flip")
  p.add_argument("--torch", action="store_true",
                 help="also time the PyTorch peer in the same rounds (needs torch installed)")
  p.add_argument("--torch_threads", type=int, default=cores,
                 help="torch intra-op threads (default: the cores of this process, as XLA)")
  p.add_argument("--compilation_cache_dir", default=None,
                 help="enable JAX's persistent compilation cache here (as the CLIs do); run "
                      "twice to measure the second run's start-up")
  p.add_argument("--json", default=None, help="append one JSON object per row to this file")
  args = p.parse_args(argv)
  if args.batch < 1 or args.iters < 1 or args.rounds < 1:
    p.error("--batch, --iters and --rounds must be >= 1")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  specs_text = [s for s in args.methods.split(",") if s.strip()]
  if "erm" not in specs_text:
    specs_text = ["erm"] + specs_text
  try:
    specs = [parse_method_spec(s, rho=args.rho, q=args.q, adv_steps=args.adv_steps)
             for s in specs_text]
  except ValueError as e:
    print(f"train_step: {e}", file=sys.stderr)
    return 2
  if args.compilation_cache_dir:
    import jax  # pylint: disable=import-outside-toplevel
    os.makedirs(args.compilation_cache_dir, exist_ok=True)
    # The same settings as experiments/launch.enable_compilation_cache.
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  all_rows = []
  for width in args.width:
    rows = run_width(specs, width=width, batch_size=args.batch, dtype_name=args.dtype,
                     model_name=args.model,
                     iters=args.iters, rounds=args.rounds, warmup=args.warmup,
                     crop_flip=args.crop_flip, torch=args.torch,
                     torch_threads=args.torch_threads, rho=args.rho, q=args.q)
    _common.append_jsonl(args.json, rows)
    all_rows.extend(rows)
  print(_common.markdown_table(all_rows, COLUMNS))
  return 0


if __name__ == "__main__":
  sys.exit(main())
