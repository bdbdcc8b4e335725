"""PyTorch peer of our PreActResNet-18 steps: plain SGD, double-backprop W-DRO, one PGD iteration.

PyTorch is a benchmark-only optional dependency (``pip install -e '.[torch]'`` or
``pip install torch==2.13.0``); without it this script prints a message and exits with status 0.

The model is the CIFAR PreActResNet-18 the papers train (3x3 stem, four stages of two
pre-activation basic blocks with ``64/128/256/512 * width/64`` channels, strides 1/2/2/2, global
average pooling, a dense layer — no BatchNorm after the last block, as in the public code:
11,171,146 parameters at width 64; input normalization ``(x - 0.5) / 0.5``
inside the model), written here the way the public PyTorch code writes it (NCHW, ``nn.Conv2d``
without bias, ``nn.BatchNorm2d``). The steps, all in float32 on images in [0, 1]:

* ``erm``: forward in train mode, mean cross-entropy, backward, SGD (lr 0.1, momentum 0.9,
  Nesterov, weight decay 5e-4).
* ``dro``: DRO-Augment's W-DRO objective with a *differentiable* penalty:
  ``mean(loss) + rho * (mean_i ||d loss / d x_i||_2^q)^(1/q)`` with the input gradient taken
  with ``create_graph=True`` (double backprop), then backward and SGD. ``rho=1, q=1`` as in the
  DRO-Augment repository's latest settings. (The official code detaches the penalty; this peer
  does the gradient-carrying version our ``dro`` computes.)
* ``pgd``: one L-inf PGD iteration in eval mode (forward, input gradient, signed step of 2/255,
  projection to the 8/255 ball, clip to [0, 1]).

Threads: ``torch.set_num_threads(--threads)``, default all cores available to the process —
the same cores XLA's CPU backend uses for JAX by default.

Usage::

  python benchmarks/torch_reference.py --width 16 --batch 128 --json /tmp/torch.jsonl
  python benchmarks/torch_reference.py --width 16,64 --steps erm,dro,pgd --iters 3 --rounds 3

The table gives images/s (median over rounds; steps interleaved in rounds so machine load hits
each alike) and each step's time relative to ``erm``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  pylint: disable=wrong-import-position

STEPS = ("erm", "dro", "pgd")


def torch_available() -> bool:
  try:
    import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def build_model(width: int, num_classes: int = 10):
  """Returns the PyTorch CIFAR PreActResNet-18 with the channel multiplier ``width / 64``."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus identity (or 1x1-conv of the activated input)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
      super().__init__()
      self.bn1 = nn.BatchNorm2d(in_planes)
      self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
      self.shortcut = None
      if stride != 1 or in_planes != planes:
        self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
      out = F.relu(self.bn1(x))
      shortcut = self.shortcut(out) if self.shortcut is not None else x
      out = self.conv1(out)
      out = self.conv2(F.relu(self.bn2(out)))
      return out + shortcut

  class PreActResNet18(nn.Module):

    def __init__(self):
      super().__init__()
      widths = [width, 2 * width, 4 * width, 8 * width]
      self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
      self.register_buffer("std", torch.full((1, 3, 1, 1), 0.5))
      self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
      blocks = []
      in_planes = width
      for stage, planes in enumerate(widths):
        for b in range(2):
          stride = 2 if (stage > 0 and b == 0) else 1
          blocks.append(PreActBlock(in_planes, planes, stride))
          in_planes = planes
      self.blocks = nn.Sequential(*blocks)
      self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x):
      out = self.conv1((x - self.mean) / self.std)
      out = self.blocks(out)
      out = F.adaptive_avg_pool2d(out, 1).flatten(1)
      return self.linear(out)

  return PreActResNet18()


def make_steps(width: int, batch: int, *, rho: float, q: float, channels_last: bool, seed: int):
  """Builds the three step closures on a fixed random batch; each runs one full step."""
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  torch.manual_seed(seed)
  model = build_model(width)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format)
  optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
  images = torch.rand(batch, 3, 32, 32).contiguous(memory_format=memory_format)
  labels = torch.randint(0, 10, (batch,))

  def erm():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss

  def dro():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    x = images.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), labels, reduction="none")
    (grad_x,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    norms = grad_x.flatten(1).pow(2).sum(1).clamp_min(1e-24).sqrt()  # safe at g = 0
    penalty = norms.pow(q).mean().pow(1.0 / q)
    loss = losses.mean() + rho * penalty
    loss.backward()
    optimizer.step()
    return loss

  eps, step_size = 8 / 255, 2 / 255

  def pgd():
    model.eval()
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)
    (grad_x,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
      x_adv = x + step_size * grad_x.sign()
      x_adv = torch.min(torch.max(x_adv, images - eps), images + eps).clamp_(0.0, 1.0)
    return x_adv

  num_params = sum(p.numel() for p in model.parameters())
  return {"erm": erm, "dro": dro, "pgd": pgd}, num_params


def run(widths, steps, *, batch: int, iters: int, rounds: int, threads: int, rho: float,
        q: float, channels_last: bool, seed: int = 0) -> list[dict]:
  """Measures the steps for each width; returns one row per (width, step)."""
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(threads)
  rows = []
  for width in widths:
    fns, num_params = make_steps(width, batch, rho=rho, q=q, channels_last=channels_last,
                                 seed=seed)
    first_s = {}
    for name in steps:
      start = time.perf_counter()
      fns[name]()
      first_s[name] = time.perf_counter() - start
    _common.log(f"torch width={width}: first calls {first_s}")
    timings = _common.time_interleaved({s: fns[s] for s in steps}, iters=iters, rounds=rounds,
                                       warmup=1)
    erm_s = timings["erm"].median_s if "erm" in timings else float("nan")
    for name in steps:
      t = timings[name]
      rows.append({
          "framework": "torch",
          "torch_version": torch.__version__,
          "step": name,
          "width": width,
          "batch": batch,
          "params": num_params,
          "threads": threads,
          "channels_last": channels_last,
          "img_per_s": t.per_second(batch),
          "img_per_s_best": t.per_second(batch, use="min"),
          "step_ms": 1000 * t.median_s,
          "step_ratio_to_erm": t.median_s / erm_s,
          "first_call_s": first_s[name],
          "rounds": rounds,
          "iters": iters,
          "samples_ms": [round(1000 * s, 2) for s in t.samples_s],
          "rho": rho if name == "dro" else None,
          "q": q if name == "dro" else None,
          "peak_rss_mb": _common.peak_rss_mb(),
          "date": _common.utc_now(),
          **_common.machine_info(),
      })
  return rows


COLUMNS = ("framework", "step", "width", "batch", "threads", "img_per_s", "step_ms",
           "step_ratio_to_erm")


def _int_list(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def parse_args(argv=None):
  try:
    default_threads = len(os.sched_getaffinity(0))
  except AttributeError:
    default_threads = os.cpu_count() or 1
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--width", type=_int_list, default=[16], help="comma list of widths (16,64)")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", default=",".join(STEPS), help=f"comma list from {STEPS}")
  p.add_argument("--iters", type=int, default=5, help="calls per step per round")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
  p.add_argument("--threads", type=int, default=default_threads,
                 help="torch intra-op threads (default: all cores of this process)")
  p.add_argument("--rho", type=float, default=1.0)
  p.add_argument("--q", type=float, default=1.0)
  p.add_argument("--channels_last", action="store_true", help="NHWC memory format")
  p.add_argument("--json", default=None, help="append one JSON object per row to this file")
  args = p.parse_args(argv)
  args.steps = [s for s in args.steps.split(",") if s]
  unknown = [s for s in args.steps if s not in STEPS]
  if unknown:
    p.error(f"--steps: unknown {unknown}; expected a comma list from {STEPS}")
  if "erm" not in args.steps:
    args.steps = ["erm"] + args.steps  # ratios are to erm
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  if not torch_available():
    print("torch_reference: PyTorch is not installed; skipping. It is a benchmark-only optional "
          "dependency: pip install torch==2.13.0 (or pip install -e '.[torch]').")
    return 0
  rows = run(args.width, args.steps, batch=args.batch, iters=args.iters, rounds=args.rounds,
             threads=args.threads, rho=args.rho, q=args.q, channels_last=args.channels_last)
  print(_common.markdown_table(rows, COLUMNS))
  _common.append_jsonl(args.json, rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
