"""`benchmarks/gpu_check.py` (`make gpu-check`) keeps working on machines without a GPU, as CI
is: its CPU part runs and it says the GPU part was skipped, with exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check runs its GPU part")
def test_gpu_check_runs_its_cpu_part_and_skips_the_gpu_part_without_cuda():
    """--quick: the `cpu` preset's step and batch-1 generation are printed, then the skip."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "training step, `cpu` preset" in run.stdout and "samples/s" in run.stdout
    assert "generation, `cpu` preset, batch 1:" in run.stdout and "x real time" in run.stdout
    assert "no CUDA GPU: skipped the GPU part" in run.stdout
