"""Importing drojax or the experiment CLIs runs no JAX computation (multi-host start-up needs it).

``jax.distributed.initialize()`` must run before any JAX backend exists; a CLI imports the
library first, so a module-level ``jnp.arange`` (or a default argument / dataclass default
built with JAX) would make every multi-process run fail at start-up.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Walks every module of both packages in one interpreter (every experiment CLI among them). No
# module may define an absl flag at import (two CLI modules imported together collided in
# absl's global registry before issue 24; a CLI's flags are defined when it runs). The check
# after each import names the first module that created a backend; the final check uses only
# public API: a CPU device count set after all imports must take effect.
_PROBE = r"""
import importlib, json, pkgutil
from absl import flags
from jax._src import xla_bridge

def initialized():
  fn = getattr(xla_bridge, "backends_are_initialized", None)
  return fn() if fn is not None else bool(xla_bridge._backends)

names, culprit, defined = [], None, {}
for pkg in ("drojax", "experiments"):
  for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
    before = set(flags.FLAGS)
    importlib.import_module(info.name)
    ours = [f for f in set(flags.FLAGS) - before  # not absl's, orbax's or tfds' own flags
            if flags.FLAGS.find_module_defining_flag(f).split(".")[0] in ("drojax", "experiments")]
    if ours:
      defined[info.name] = sorted(ours)
    names.append(info.name)
    if culprit is None and initialized():
      culprit = info.name
import jax
try:
  jax.config.update("jax_num_cpu_devices", 3)
  devices = len(jax.devices())
except RuntimeError as e:
  devices = str(e)
print(json.dumps({"modules": names, "culprit": culprit, "devices": devices,
                  "defined": defined}))
"""


def test_no_module_initialises_a_jax_backend_at_import():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  # The walk really covered both packages (a broken walk would pass vacuously).
  assert {"drojax.augment.ops", "drojax.train", "experiments.cifar_c",
          "experiments.train"} <= set(report["modules"]), report["modules"]
  assert {"experiments.reproduce", "experiments.group_shift", "experiments.waterbirds",
          "experiments.sweep", "experiments.compare"} <= set(report["modules"])
  assert report["defined"] == {}, f"absl flags defined at import: {report['defined']}"
  assert report["culprit"] is None, (
      f"importing {report['culprit']} initialised a JAX backend (JAX work at import time)")
  assert report["devices"] == 3, report["devices"]
