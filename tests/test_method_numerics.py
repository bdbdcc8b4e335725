"""Every method that existed before the method layer became objectives with their own state
(issue 13) gives the same parameters and BatchNorm statistics after 3 train steps as the code
before the change did, on 1 and on 8 forced CPU devices, up to float32 rounding.

``tests/data/method_params_before.npz`` was recorded with ``tests/method_numerics_worker.py``
run on commit 2a5963c (before the refactor); the W-DRO methods with their penalty mode pinned,
so the recording keeps its meaning after the default mode changed to forward_over_reverse.
The ``var_dro*`` keys (``var_dro``, ``var_dro_mixup``, ``var_dro_augmix``, 1 and 8 devices) were
re-recorded on 2026-12-03 (issue 26, jax 0.10.2, same worker) when Var-DRO moved to the paper's
per-step order (tracker update, then weights from the updated variances): the third step, batch
0's second visit, now has non-uniform weights, where the pre-update variances were still 0 and
the old recording equalled ERM's to 1.2e-7. Every other key is byte-identical to the original.

Another CPU (AVX-512, AVX2, SSE4.2: FMA or not, other vector widths) orders and fuses the
float32 work differently, so no fixed tolerance recorded on one machine holds on all. The
tolerance is instead measured where the test runs: the worker repeats the 3 steps from the
initial state moved by one ulp per parameter (two random directions), and the difference to
the recording may be at most ``ROUNDING_FACTOR`` times the larger spread that produces. On
this project's CPU, with ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`` / ``AVX2`` / the default
(AVX-512) and LLVM at -O0 or its default, the recording differed by at most 2.5 times that
spread (about 1e-7 to 3e-6 of the largest parameter); a change of the numerics beyond rounding
(a term, a coefficient, a key) moves the result by orders of magnitude more.

Another XLA also changes its elementwise approximations (jax 0.12 moved ``augmix`` by up to 5e-5
after 3 steps with no change of ours), which one-ulp inputs do not model, so the comparison runs
only on the JAX version that made the recording.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDING = os.path.join(ROOT, "tests", "data", "method_params_before.npz")
RECORDED_WITH_JAX = "0.10.2"
ROUNDING_FACTOR = 10.0
# The largest tolerance, relative to the largest parameter, that still catches a real change.
MAX_RELATIVE_TOLERANCE = 1e-4


@pytest.mark.slow
def test_every_old_method_keeps_its_numerics_on_1_and_8_devices(tmp_path):
  import jax

  if jax.__version__ != RECORDED_WITH_JAX:
    pytest.skip(f"the recording was made with jax {RECORDED_WITH_JAX}; jax {jax.__version__}'s "
                "XLA computes float32 elementwise functions differently (CI's low end and the "
                "README's install run this comparison)")
  out = tmp_path / "now.npz"
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "method_numerics_worker.py"),
                         str(out)], capture_output=True, text=True, timeout=1800, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(RECORDING) as f:
    before = dict(f)
  with np.load(out) as f:
    now = dict(f)
  assert sorted(k for k in now if "/" not in k) == sorted(before)
  for key, want in before.items():
    scale = float(np.max(np.abs(want)))
    spread = max(float(np.max(np.abs(now[f"{key}/ulp{seed}"] - now[key]))) for seed in (1, 2))
    assert spread > 0, f"{key}: one ulp of the initial state changed nothing"
    tolerance = ROUNDING_FACTOR * spread
    assert tolerance < MAX_RELATIVE_TOLERANCE * scale, (key, spread, scale)
    error = float(np.max(np.abs(now[key] - want)))
    assert error <= tolerance, (
        f"{key}: differs from the recording by {error:.3g} (largest parameter {scale:.3g}), more "
        f"than {ROUNDING_FACTOR:g} x the {spread:.3g} that one ulp of the initial state makes")
