"""The suite writes only under temporary directories: HOME and the XDG directories of the test
process and of every subprocess it starts point into conftest's temporary home, so the CLIs'
default compilation cache, matplotlib's cache and tfds' default data directory land there."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import os, matplotlib
from experiments import launch
print(launch.enable_compilation_cache(launch.DEFAULT_CACHE_DIR))
print(matplotlib.get_cachedir())
print(matplotlib.get_configdir())
print(os.path.expanduser("~/tensorflow_datasets"))
"""


def _under(path, root):
  return os.path.commonpath([os.path.realpath(path), os.path.realpath(root)]) == \
      os.path.realpath(root)


def test_a_subprocess_writes_its_caches_under_the_temporary_home():
  home = os.environ["DROJAX_TEST_HOME"]
  real = os.environ["DROJAX_TEST_REAL_HOME"]
  assert os.path.realpath(home) != os.path.realpath(real)
  assert os.path.realpath(os.path.expanduser("~")) == os.path.realpath(home)
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  paths = proc.stdout.split()
  assert len(paths) == 4, proc.stdout
  for path in paths:
    assert _under(path, home), (path, home)
  assert os.path.isdir(paths[0])  # the compilation cache was created, in the temporary home
