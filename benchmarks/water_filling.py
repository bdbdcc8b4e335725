"""Water-filling (Var-DRO's per-batch LP) speed: jitted JAX vs scipy linprog vs a Python loop.

For each batch size B, solves ``max_q sum q_i l_i`` s.t. ``sum q = 1``,
``exp(-eps_i)/B <= q_i <= exp(eps_i)/B`` three ways on the same random instance:

* ``jit``: ``drojax.weighting.water_filling`` under ``jax.jit``, timed per call including
  dispatch and ``block_until_ready``, inputs already on the device;
* ``in_step``: the cost inside a compiled step, without per-call dispatch: one ``jax.jit`` runs
  ``lax.scan`` over ``K`` different instances and the time is divided by ``K`` (the way the
  solve runs inside the Var-DRO train step). On a loaded machine the per-call dispatch (thread
  hand-offs) can dominate ``jit``;
* ``linprog``: ``scipy.optimize.linprog(method="highs")``, the general LP solver (only up to
  ``--linprog_max_b``, default 8192: HiGHS took 421 s for one B = 65536 instance here);
* ``python_loop``: NumPy sort, then a Python loop pouring the mass example by example (the
  paper's Algorithm 1 written naively).

The three are timed in alternating rounds in one process (the machine is shared, so compare
the ratios); the table gives each method's fastest round (``*_us``, least disturbed by other
load) and the jitted median. Speed-ups are the median over rounds of the per-round ratio
(both measured back to back in the same round, so load shifts cancel). The objective values
are checked against linprog's (or the Python loop's above ``--linprog_max_b``).

Usage::

  python benchmarks/water_filling.py                      # B = 128, 1024, 65536
  python benchmarks/water_filling.py --sizes 128 --json /tmp/wf.jsonl

Prints a Markdown table; ``--json PATH`` appends one JSON object per B.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linprog

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _common  # noqa: E402
from drojax.weighting import water_filling  # noqa: E402


def linprog_weights(losses: np.ndarray, eps: np.ndarray) -> np.ndarray:
  b = losses.shape[0]
  bounds = np.stack([np.exp(-eps) / b, np.exp(eps) / b], axis=1)
  res = linprog(-losses, A_eq=np.ones((1, b)), b_eq=[1.0], bounds=bounds, method="highs")
  if res.status != 0:
    raise RuntimeError(f"linprog failed: {res.message}")
  return res.x


def python_loop_weights(losses: np.ndarray, eps: np.ndarray) -> np.ndarray:
  b = losses.shape[0]
  lower = np.exp(-eps) / b
  upper = np.exp(eps) / b
  q = lower.copy()
  budget = 1.0 - lower.sum()
  for i in np.argsort(-losses, kind="stable"):
    if budget <= 0:
      break
    add = min(upper[i] - lower[i], budget)
    q[i] += add
    budget -= add
  return q


def _time_rounds(fns, iters, rounds):
  """Alternating rounds; ``iters[name]`` calls per round; returns name -> median seconds/call."""
  samples = {name: [] for name in fns}
  for name, fn in fns.items():  # warm-up (compilation)
    fn()
  for r in range(rounds):
    names = list(fns)
    names = names[r % len(names):] + names[:r % len(names)]
    for name in names:
      start = time.perf_counter()
      for _ in range(iters[name]):
        fns[name]()
      samples[name].append((time.perf_counter() - start) / iters[name])
  return {name: (statistics.median(s), min(s), s) for name, s in samples.items()}


def _paired_ratio(slow, fast):
  """Median over rounds of slow/fast, each pair measured back to back in the same round."""
  return statistics.median(a / b for a, b in zip(slow, fast))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[128, 1024, 65536])
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--eps_max", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--linprog_max_b", type=int, default=8192,
                 help="skip linprog above this batch size (it is very slow there)")
  p.add_argument("--json", default=None, help="append one JSON line per batch size here")
  args = p.parse_args(argv)

  solve = jax.jit(water_filling)
  rows = []
  info = _common.machine_info()
  for b in args.sizes:
    rng = np.random.default_rng(args.seed + b)
    losses = rng.exponential(1.0, size=b).astype(np.float32)
    eps = rng.uniform(0.0, args.eps_max, size=b).astype(np.float32)
    l_dev, e_dev = jax.device_put(losses), jax.device_put(eps)
    l64, e64 = losses.astype(np.float64), eps.astype(np.float64)

    use_lp = b <= args.linprog_max_b
    q_jit = np.asarray(solve(l_dev, e_dev), np.float64)
    q_loop = python_loop_weights(l64, e64)
    q_ref = linprog_weights(l64, e64) if use_lp else q_loop
    gap_jit = abs(q_jit @ l64 - q_ref @ l64)
    gap_loop = abs(q_loop @ l64 - q_ref @ l64)

    k = 64 if b <= 4096 else 4
    many_l = jax.device_put(rng.exponential(1.0, size=(k, b)).astype(np.float32))
    many_e = jax.device_put(rng.uniform(0.0, args.eps_max, size=(k, b)).astype(np.float32))
    scan_solve = jax.jit(lambda ls, es: jax.lax.scan(
        lambda c, le: (c + le[1] @ water_filling(le[0], le[1]), None),
        jnp.zeros((), jnp.float32), (ls, es))[0])
    fns = {
        "jit": lambda: solve(l_dev, e_dev).block_until_ready(),
        "in_step": lambda: scan_solve(many_l, many_e).block_until_ready(),
        "python_loop": lambda: python_loop_weights(l64, e64),
    }
    if use_lp:
      fns["linprog"] = lambda: linprog_weights(l64, e64)
    # Roughly comparable wall time per round at each size.
    iters = {"jit": 200 if b <= 4096 else 10, "in_step": 5 if b <= 4096 else 1,
             "linprog": 5 if b <= 1024 else 1,
             "python_loop": 50 if b <= 4096 else 2}
    _common.log(f"B={b}: timing {args.rounds} rounds ...")
    t = _time_rounds(fns, iters, args.rounds)
    lp_min = t["linprog"][1] if use_lp else float("nan")
    row = {
        "bench": "water_filling",
        "B": b,
        "jit_us": t["jit"][1] * 1e6,
        "jit_median_us": t["jit"][0] * 1e6,
        "in_step_us": t["in_step"][1] / k * 1e6,
        "linprog_us": lp_min * 1e6,
        "python_loop_us": t["python_loop"][1] * 1e6,
        "speedup_vs_linprog": (_paired_ratio(t["linprog"][2], t["jit"][2]) if use_lp
                               else float("nan")),
        "speedup_vs_loop": _paired_ratio(t["python_loop"][2], t["jit"][2]),
        "in_step_speedup_vs_linprog": (
            _paired_ratio(t["linprog"][2], [v / k for v in t["in_step"][2]]) if use_lp
            else float("nan")),
        "objective_gap_jit": gap_jit,
        "objective_gap_loop": gap_loop,
        "reference": "linprog" if use_lp else "python_loop",
        "utc": _common.utc_now(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        **info,
    }
    rows.append(row)

  cols = ["B", "jit_us", "jit_median_us", "in_step_us", "linprog_us", "python_loop_us",
          "speedup_vs_linprog", "in_step_speedup_vs_linprog", "speedup_vs_loop",
          "objective_gap_jit"]
  table_rows = [dict(r, objective_gap_jit=f"{r['objective_gap_jit']:.1e}") for r in rows]
  print(_common.markdown_table(table_rows, cols))
  _common.append_jsonl(args.json, rows)


if __name__ == "__main__":
  main()
