"""Which precision a run trains in: `train.precision` "auto" resolved for the device at hand.

bf16 autocast pays only where the device computes bf16 natively: on some CPUs the `cpu`
recipe's step runs faster in bf16, on others many times slower (emulated; docs/speed.md). So
"auto" measures it: forward and backward passes of a gated dilated convolution, the decoders'
layer, in both precisions, alternated (a busy machine slows both alike), best of five each,
once per machine (cached under $UMTUNE_CACHE, default ~/.cache/umtune, keyed by the CPU's
flags, the threads and torch's version). CUDA devices take bf16 where they support it. An
explicit "bf16" on a CPU measured slower in bf16 is kept, with a warning naming the ratio.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from umtune.storage import write_json_atomic


@dataclass(frozen=True)
class Choice:
    """The precision a run trains in and why: bf16's speed over fp32 (None: not measured)."""

    precision: str
    speedup: float | None
    reason: str


def autocast(precision: str, device: torch.device | str):
    """The autocast context of a resolved precision ("bf16" or "fp32") on `device`."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve(precision: str, device: torch.device | str = "cpu") -> Choice:
    """"fp32" and "bf16" as asked ("bf16" on a CPU that runs it slower gets a warning); "auto"
    as measured here."""
    device = torch.device(device)
    if precision == "fp32":
        return Choice("fp32", None, "as configured")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return Choice("bf16" if native else "fp32", None,
                          f"{torch.cuda.get_device_name(device)} "
                          f"{'supports' if native else 'lacks'} bf16")
        return Choice("bf16", None, "as configured")
    if device.type != "cpu":
        return Choice("fp32" if precision == "auto" else precision, None,
                      f"not measured on {device.type}")
    speedup = cpu_bf16_speedup()
    if precision == "auto":
        chosen = "bf16" if speedup > 1.05 else "fp32"
        return Choice(chosen, speedup, f"bf16 measured {speedup:.2f}x fp32's speed on this CPU")
    if speedup < 1:
        warnings.warn(f"train.precision=bf16 on a CPU where bf16 runs at {speedup:.2f}x fp32's "
                      f"speed (emulated, not native): expect a slower run; train.precision="
                      f"auto chooses for this machine", stacklevel=2)
    return Choice("bf16", speedup, "as configured")


def _cpu_key() -> str:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return hashlib.sha256(f"{flags}|{torch.__version__}|{torch.get_num_threads()}".encode()
                          ).hexdigest()[:16]


def cache_file() -> Path:
    return Path(os.environ.get("UMTUNE_CACHE", Path.home() / ".cache" / "umtune")) / \
        "precision.json"


def cpu_bf16_speedup() -> float:
    """fp32's time over bf16 autocast's for the probe, measured once per machine and cached."""
    key, file = _cpu_key(), cache_file()
    try:
        cached = json.loads(file.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for i in range(PROBE_ROUNDS + 1):  # alternated, so that a busy machine slows both alike
        for chosen in seconds:
            elapsed = _probe_seconds(chosen)
            if i:  # the first round warms up
                seconds[chosen].append(elapsed)
    speedup = min(seconds["fp32"]) / min(seconds["bf16"])
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next run the probe
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(file, {**(cached if isinstance(cached, dict) else {}), key: speedup})
    return speedup


PROBE_ROUNDS = 5


def _probe_seconds(precision: str) -> float:
    """Seconds of forward and backward through a gated dilated conv the size of a `cpu`
    decoder layer (64 -> 128 channels, kernel 2, on 8 x 4,000 samples)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 4000, generator=generator)
    weight = torch.randn(128, 64, 2, generator=generator, requires_grad=True)
    mix = torch.randn(64, 64, 1, generator=generator, requires_grad=True)
    start = time.perf_counter()
    with autocast(precision, "cpu"):
        a, b = F.conv1d(F.pad(x, (4, 0)), weight, dilation=4).chunk(2, dim=1)
        out = F.conv1d(torch.tanh(a) * torch.sigmoid(b), mix)
    out.float().square().mean().backward()
    return time.perf_counter() - start
