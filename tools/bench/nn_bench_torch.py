#!/usr/bin/env python3
"""PyTorch CPU companion of tools/bench/nn-bench.ts.

Builds the same two blocks as the TypeScript benchmark (a pre-norm ViT block and a MobileNetV2
inverted residual block, train mode) and times them on the CPU with one thread. It is driven over
stdin/stdout, one JSON object per line, so that the caller can interleave its own measurements with
these (both see the same machine load):

  -> {"cmd": "info"}
  <- {"ok": true, "torch": "...", "threads": 1, "blas": "...", ...}
  -> {"cmd": "time", "block": "vit" | "mbv2", "phase": "fwd" | "fwdbwd", "reps": 1}
  <- {"ok": true, "wall_ms": [...], "cpu_ms": [...]}
  -> {"cmd": "quit"}

`fwd` runs under torch.no_grad() (train-mode statistics, no autograd graph); `fwdbwd` computes the
loss mean(y**2) and the gradients of every parameter, as the TypeScript side does. Run with
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 (the caller sets them); threadpoolctl,
when installed, also caps the BLAS pool.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0


class ViTBlock(nn.Module):
    """LayerNorm -> multi-head attention -> residual, LayerNorm -> MLP(GELU tanh) -> residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.heads, c // self.heads
        y = self.norm1(x)
        q = self.q(y).view(b, n, h, d).transpose(1, 2)
        k = self.k(y).view(b, n, h, d).transpose(1, 2)
        v = self.v(y).view(b, n, h, d).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, n, c)
        x = x + self.o(o)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class InvertedResidual(nn.Module):
    """1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 project + BN, residual."""

    def __init__(self, c: int, expand: int):
        super().__init__()
        e = c * expand
        self.expand = nn.Conv2d(c, e, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(e)
        self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False)
        self.bn2 = nn.BatchNorm2d(e)
        self.project = nn.Conv2d(e, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn1(self.expand(x)))
        h = F.relu6(self.bn2(self.dw(h)))
        return x + self.bn3(self.project(h))


def build(block: str):
    torch.manual_seed(SEED)
    if block == "vit":
        model = ViTBlock(128, 4, 4)
        x = torch.randn(32, 64, 128)
    elif block == "mbv2":
        model = InvertedResidual(32, 6)
        x = torch.randn(32, 32, 16, 16)  # NCHW, PyTorch's native layout
    else:
        raise ValueError(f"unknown block {block!r}: expected 'vit' or 'mbv2'")
    model.train()
    return model, x


MODELS = {}


def run_once(block: str, phase: str) -> None:
    if block not in MODELS:
        MODELS[block] = build(block)
    model, x = MODELS[block]
    if phase == "fwd":
        with torch.no_grad():
            model(x)
    elif phase == "fwdbwd":
        model.zero_grad(set_to_none=True)
        loss = model(x).pow(2).mean()
        loss.backward()
    else:
        raise ValueError(f"unknown phase {phase!r}: expected 'fwd' or 'fwdbwd'")


def time_it(block: str, phase: str, reps: int):
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        run_once(block, phase)
        cpu.append((time.process_time() - c0) * 1000.0)
        wall.append((time.perf_counter() - w0) * 1000.0)
    return wall, cpu


def info():
    blas = None
    try:
        from threadpoolctl import threadpool_info  # type: ignore

        blas = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)" for p in threadpool_info()]
    except ImportError:
        blas = None
    return {
        "ok": True,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "blas": blas,
        "threadpoolctl": blas is not None,
        "python": sys.version.split()[0],
    }


def main() -> None:
    torch.set_num_threads(1)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits  # type: ignore

        limiter = threadpool_limits(1)
    except ImportError:
        pass
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "quit":
                break
            if cmd == "info":
                out = info()
            elif cmd == "time":
                wall, cpu = time_it(str(req["block"]), str(req["phase"]), int(req.get("reps", 1)))
                out = {"ok": True, "wall_ms": wall, "cpu_ms": cpu}
            else:
                out = {"ok": False, "error": f"unknown command {cmd!r}"}
        except Exception as e:  # report to the caller instead of dying mid-protocol
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    del limiter


if __name__ == "__main__":
    main()
