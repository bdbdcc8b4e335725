"""The 3x3 convolutions of PreActResNet-18, one op at a time: JAX (XLA CPU) against PyTorch.

For each stage shape of the model (``[B, H, H, C] -> C`` channels, stride 1: the convolutions
that make up most of a train step) this times, jitted and alone:

* ``forward``: ``y = conv(x, w)``;
* ``input_grad``: the vjp w.r.t. ``x`` (a transposed convolution), what backprop runs per layer;
* ``weight_grad``: the vjp w.r.t. ``w`` (a correlation of ``x`` with the output gradient);

with ``--alternatives`` also two other ways of writing the weight gradient in JAX (both tried
as replacements for XLA's, both slower on this CPU):

* ``weight_grad_im2col``: the 9 shifted copies of the padded input concatenated along channels
  (``[B, H, W, 9C]``), then one contraction with the output gradient over ``B, H, W``;
* ``weight_grad_taps``: one ``[C, BHW] x [BHW, C]`` contraction per kernel tap;

and, when PyTorch is installed, its peers (``F.conv2d``, ``torch.nn.grad.conv2d_input``,
``torch.nn.grad.conv2d_weight``, NCHW, ``torch.set_num_threads(--torch_threads)``), interleaved
in the same rounds. ``jax_over_torch`` is PyTorch's time divided by ours (> 1: we are faster).
It locates where a train step's time goes relative to PyTorch's: see ``docs/benchmarks.md``.

Usage::

  python benchmarks/conv_ops.py --width 16,64 --batch 128 --json OUT.jsonl
  python benchmarks/conv_ops.py --width 16,64 --alternatives --no_torch
"""

from __future__ import annotations

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import _common  # noqa: E402  pylint: disable=wrong-import-position

OPS = ("forward", "input_grad", "weight_grad")
ALTERNATIVES = ("weight_grad_im2col", "weight_grad_taps")
STAGES = ((32, 1), (16, 2), (8, 4), (4, 8))  # (spatial size, channels / width) per stage


def jax_ops(h: int, c: int, batch: int, seed: int):
  """``{op: no-arg callable}`` of the jitted JAX ops on fixed random operands."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  x = jax.numpy.asarray(rng.random((batch, h, h, c), np.float32))
  w = jax.numpy.asarray(rng.standard_normal((3, 3, c, c), np.float32) / (3 * c ** 0.5))
  g = jax.numpy.asarray(rng.standard_normal((batch, h, h, c), np.float32))

  def conv(x_, w_):
    return jax.lax.conv_general_dilated(x_, w_, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  forward = jax.jit(conv)
  input_grad = jax.jit(lambda x_, w_, g_: jax.vjp(lambda a: conv(a, w_), x_)[1](g_)[0])
  weight_grad = jax.jit(lambda x_, w_, g_: jax.vjp(lambda a: conv(x_, a), w_)[1](g_)[0])
  def shifted(x_):
    xp = jax.numpy.pad(x_, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, i:i + h, j:j + h, :] for i in range(3) for j in range(3)]

  im2col = jax.jit(lambda x_, g_: jax.numpy.einsum(
      "bhwk,bhwo->ko", jax.numpy.concatenate(shifted(x_), axis=-1), g_).reshape(3, 3, c, c))
  taps = jax.jit(lambda x_, g_: jax.numpy.stack([
      jax.numpy.einsum("bhwc,bhwo->co", s, g_) for s in shifted(x_)]).reshape(3, 3, c, c))
  return {
      "weight_grad_im2col": lambda: jax.block_until_ready(im2col(x, g)),
      "weight_grad_taps": lambda: jax.block_until_ready(taps(x, g)),
      "forward": lambda: jax.block_until_ready(forward(x, w)),
      "input_grad": lambda: jax.block_until_ready(input_grad(x, w, g)),
      "weight_grad": lambda: jax.block_until_ready(weight_grad(x, w, g)),
  }


def torch_ops(h: int, c: int, batch: int, seed: int):
  """``{op: no-arg callable}`` of the PyTorch peers (NCHW), or ``{}`` without PyTorch."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}
  gen = torch.Generator().manual_seed(seed)
  x = torch.rand(batch, c, h, h, generator=gen)
  w = torch.randn(c, c, 3, 3, generator=gen) / (3 * c ** 0.5)
  g = torch.randn(batch, c, h, h, generator=gen)

  def run(fn):
    def call():
      with torch.no_grad():
        fn()
    return call

  return {
      "forward": run(lambda: torch.nn.functional.conv2d(x, w, padding=1)),
      "input_grad": run(lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=1)),
      "weight_grad": run(lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=1)),
  }


def _int_list(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--width", type=_int_list, default=[16, 64], help="comma list of widths")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--iters", type=int, default=5, help="calls per op per round")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
  p.add_argument("--torch_threads", type=int, default=len(os.sched_getaffinity(0)))
  p.add_argument("--no_torch", action="store_true", help="JAX only")
  p.add_argument("--alternatives", action="store_true",
                 help="also time the im2col and per-tap weight gradients (JAX)")
  p.add_argument("--json", default=None, help="append one JSON object per row to this file")
  args = p.parse_args(argv)
  for name in ("batch", "iters", "rounds", "torch_threads"):
    if getattr(args, name) < 1:
      p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if not args.width or min(args.width) < 1:
    p.error(f"--width must be a comma list of positive ints, got {args.width}")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  use_torch = not args.no_torch
  if use_torch:
    try:
      import torch  # pylint: disable=import-outside-toplevel
      torch.set_num_threads(args.torch_threads)
    except ImportError:
      _common.log("PyTorch is not installed: JAX rows only (pip install torch for the peer)")
      use_torch = False
  rows = []
  for width in args.width:
    for h, mult in STAGES:
      c = width * mult
      ops = OPS + (ALTERNATIVES if args.alternatives else ())
      fns = {f"jax:{op}": fn for op, fn in jax_ops(h, c, args.batch, 0).items() if op in ops}
      if use_torch:
        fns.update({f"torch:{op}": fn for op, fn in torch_ops(h, c, args.batch, 0).items()})
      _common.log(f"width={width} {h}x{h}x{c}: timing {len(fns)} ops")
      timings = _common.time_interleaved(fns, iters=args.iters, rounds=args.rounds)
      for op in ops:
        jax_ms = timings[f"jax:{op}"].median_s * 1e3
        torch_ms = timings[f"torch:{op}"].median_s * 1e3 if f"torch:{op}" in timings else None
        rows.append({
            "benchmark": "conv_ops", "width": width, "batch": args.batch,
            "shape": f"{h}x{h}x{c}", "op": op, "jax_ms": jax_ms, "torch_ms": torch_ms,
            "jax_over_torch": torch_ms / jax_ms if torch_ms else None,
            "time": _common.utc_now(), **_common.machine_info(),
        })
  print(_common.markdown_table(
      rows, ["width", "shape", "op", "jax_ms", "torch_ms", "jax_over_torch"]))
  _common.append_jsonl(args.json, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
