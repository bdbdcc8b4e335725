"""The multi-run CLIs end to end on tiny settings: sweep (+ Pareto plot), compare, waterbirds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--preset=quick", "--config.model=tiny", "--config.batch_size=16",
    "--config.eval.images=32", "--config.eval.batch_size=32", "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=100",
]


def _run(args, cache, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  if cache is not None:
    args = [*args, f"--compilation_cache_dir={cache}"]
  return subprocess.run([sys.executable, "-m", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  path = tmp_path_factory.getbasetemp().parent / "drojax_multi_jax_cache"
  path.mkdir(exist_ok=True)
  return path


@pytest.mark.slow
def test_sweep_writes_runs_pareto_and_comparison_then_compare_cli(tmp_path, cache):
  root = tmp_path / "sweep"
  proc = _run(["experiments.sweep", "--method=dro", "--param=rho", "--values=0,2",
               "--dataset=digits", f"--workdir={root}", *TINY, "--config.num_epochs=1",
               "--config.warmup_epochs=0",
               "--config.train_subset=64", "--config.eval.corruption_names=contrast",
               "--config.eval.severities=3", "--config.eval.adv_eps="], cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((root / "sweep.json").read_text())
  assert [r["rho"] for r in summary["runs"]] == [0.0, 2.0]
  assert any(r["pareto_optimal"] for r in summary["runs"])
  for name in ("sweep.md", "pareto.png"):
    assert (root / name).is_file(), name
  assert any(f.startswith("comparison") for f in os.listdir(root)), os.listdir(root)
  for v in ("0", "2"):
    cfg = json.loads((root / f"rho_{v}" / "config.json").read_text())
    assert cfg["method_config"]["rho"] == float(v)
  out = tmp_path / "cmp"
  proc = _run(["experiments.compare", f"--workdirs={root / 'rho_0'},{root / 'rho_2'}",
               f"--out={out}"], None, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert any(f.startswith("comparison") for f in os.listdir(out))
  proc = _run(["experiments.compare", f"--workdirs={tmp_path / 'nope'}"], None, timeout=120)
  assert proc.returncode == 2 and "has no results.json" in proc.stderr


@pytest.mark.slow
def test_waterbirds_reports_group_accuracy(tmp_path, cache):
  folder = tmp_path / "wb"
  (folder / "img").mkdir(parents=True)
  rng = np.random.default_rng(0)
  lines = ["img_id,img_filename,y,split,place,place_filename"]
  i = 0
  for split, n in ((0, 32), (1, 8), (2, 16)):
    for _ in range(n):
      y, place = i % 2, (i // 2) % 2
      pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
      pixels[..., 0] = 255 * y  # a learnable label cue
      Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
      lines.append(f"{i},img/{i}.png,{y},{split},{place},x")
      i += 1
  (folder / "metadata.csv").write_text("\n".join(lines) + "\n")
  root = tmp_path / "runs"
  proc = _run(["experiments.waterbirds", "--methods=erm,var_dro", f"--data_dir={folder}",
               f"--workdir={root}", *TINY, "--config.num_epochs=2"], cache)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for method in ("erm", "var_dro"):
    r = json.loads((root / method / "results.json").read_text())
    groups = r["group_accuracy"]
    assert r["method"] == method and r["dataset"] == "waterbirds"
    per_group = groups["per_group"]
    assert len(per_group) == 4  # 2 * y + place over the 16 test images
    assert groups["worst_group"] == pytest.approx(min(per_group.values()))
    assert groups["weights_from"] == "train"  # average weighted by the training groups
  assert any(f.startswith("comparison") for f in os.listdir(root))


def test_fashion_mnist_pgd_bad_method_exits_2(tmp_path, cache):
  proc = _run(["experiments.fashion_mnist_pgd", "--methods=erm,dro_mixpu",
               f"--workdir={tmp_path}"], cache, timeout=120)
  assert proc.returncode == 2 and "Did you mean 'dro_mixup'" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
