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
