"""Where the workplace's real data lives (read-only; never copied into the repo).

``$DROJAX_SHARED_DATA`` wins; otherwise ``shared/data`` beside the checkout (as CI lays it
out), falling back to ``/work/shared/data``. Tests that need a file skip when it is missing.
"""

import os
import pathlib


def shared_data_dir() -> pathlib.Path:
  env = os.environ.get("DROJAX_SHARED_DATA")
  if env:
    return pathlib.Path(env)
  beside = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
  return beside if beside.is_dir() else pathlib.Path("/work/shared/data")


SHARED_DATA = shared_data_dir()


def write_tiny_fashion_mnist(folder, *, train: int = 64, test: int = 16) -> None:
  """Random ``fashion_mnist_{train,test}.npz`` (28x28x1 uint8, labels cycling 0-9) in
  ``folder``: what the Fashion-MNIST loaders read, for tests that train for seconds."""
  import numpy as np

  rng = np.random.default_rng(0)
  for split, n in (("train", train), ("test", test)):
    np.savez(pathlib.Path(folder) / f"fashion_mnist_{split}.npz",
             images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
             labels=np.arange(n, dtype=np.int64) % 10)
