"""The pure core is light to import and has no import cycle (the API conventions: test_api.py)."""

import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("flax", "optax", "orbax", "tensorflow_datasets", "tensorflow", "torch")

_PROBE = """
import json, sys
import drojax.losses, drojax.wdro, drojax.objectives, drojax.weighting
heavy = %r
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_core_imports_no_heavy_dependencies():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _PROBE % (HEAVY,)], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  loaded = json.loads(out.stdout.strip().splitlines()[-1])
  assert loaded == [], f"import drojax.losses, .wdro, .objectives, .weighting loaded {loaded}"


def test_no_import_cycle_in_drojax():
  """Module-level ``drojax`` imports form no cycle (a package imports its submodules, which may
  import the package's siblings but never back up a circle)."""
  import ast
  import pathlib
  root = pathlib.Path(REPO) / "drojax"
  graph = {}
  for path in root.rglob("*.py"):
    rel = path.relative_to(REPO).with_suffix("")
    name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    deps = set()
    for node in ast.parse(path.read_text()).body:  # module level only, lazy imports excluded
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name.startswith("drojax"))
      elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("drojax"):
        deps.add(node.module)
        deps.update(f"{node.module}.{a.name}" for a in node.names)
    graph[name] = deps
  graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
  # A package's __init__ importing its own submodules is not a cycle back to it.
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == "open" and not m.startswith(d + "."):
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
