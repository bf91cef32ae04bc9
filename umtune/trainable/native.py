"""C kernels built on first use with the system's C compiler (fused_step.c, kernels.c).

A library is cached under $UMTUNE_CACHE (default ~/.cache/umtune), keyed by its source, the
flags and the CPU (it is built with -march=native), and written atomically: concurrent
processes each build it or find it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from umtune.storage import staged

SOURCE = Path(__file__).with_name("kernels.c")
DTYPES = {torch.bfloat16: "bf16", torch.float32: "f32"}  # the dtypes kernels.c has variants for
MAX_CHANNELS = 4096  # kernels.c's MAX_GATE: the channels its per-frame and per-row buffers hold


class KernelUnavailable(RuntimeError):
    """A C kernel cannot be built or loaded here (no compiler, not x86-64/Linux, ...)."""


def cache_dir() -> Path:
    return Path(os.environ.get("UMTUNE_CACHE", Path.home() / ".cache" / "umtune")) / "kernels"


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((line for line in info.splitlines() if line.startswith("flags")), "")


def find_compiler() -> str | None:
    """$CC, else cc, else gcc: the first found on PATH."""
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def build(source: Path, compile_flags: list[str], link_flags: list[str]) -> Path:
    """The library of `source`, built if this source, these flags and this CPU have none.
    Compiled and linked in two commands, so that -ffast-math in `compile_flags` does not link
    crtfastmath.o (which would set flush-to-zero for the whole process on load)."""
    compiler = find_compiler()
    if compiler is None:
        raise KernelUnavailable(f"no C compiler ({os.environ.get('CC') or 'cc'} or gcc) on PATH "
                                f"to build {source.name}")
    key = hashlib.sha256(b"\0".join([source.read_bytes(),
                                     " ".join(compile_flags + link_flags).encode(),
                                     _cpu().encode()])).hexdigest()[:16]
    library = cache_dir() / f"{source.stem}-{key}.so"
    if library.exists():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, staged(library) as tmp:
        obj = Path(folder) / f"{source.stem}.o"
        for command in ([compiler, *compile_flags, "-c", str(source), "-o", str(obj)],
                        [compiler, str(obj), "-o", str(tmp), *link_flags]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
                raise KernelUnavailable(f"{' '.join(command)} failed: {first}")
    return library


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """kernels.c (the training step's gate and cross-entropy) built and loaded once per
    process; None where it cannot be (their callers then run PyTorch ops).

    -fno-trapping-math (no FP exceptions are read; values, NaN and inf unchanged) lets gcc
    if-convert the clamps in tanh and exp: without it, on AVX2 and with gcc's Zen tuning, the
    gate's and the cross-entropy's loops ran scalar."""
    try:
        return ctypes.CDLL(str(build(SOURCE, ["-O3", "-march=native", "-fno-trapping-math",
                                              "-fopenmp", "-fPIC"], ["-shared", "-fopenmp"])))
    except (KernelUnavailable, OSError):
        return None


@torch.compiler.assume_constant_result
def kernels_available() -> bool:
    return kernels() is not None


def runs_on_kernels(t: torch.Tensor) -> bool:
    """Whether kernels.c has a variant for tensor t (on the CPU, of a dtype in DTYPES) and
    loads here."""
    return t.device.type == "cpu" and t.dtype in DTYPES and kernels_available()


def rows_evenly_strided(t: torch.Tensor) -> bool:
    """Whether t's rows (every index but the last) lie at one stride from each other, each
    row's channels contiguous: the layout kernels.c's row loops read."""
    return t.stride(-1) == 1 and all(t.stride(i) == t.shape[i + 1] * t.stride(i + 1)
                                     for i in range(t.dim() - 2))


def kernel(name: str, dtype: torch.dtype):
    """kernels.c's function `name` for `dtype`: umtune_{name}_{bf16|f32}."""
    return getattr(kernels(), f"umtune_{name}_{DTYPES[dtype]}")


def pointer(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())
