"""`make gpu-check`: what umtune does on this machine's NVIDIA GPUs, in one command.

With CUDA: the `paper` preset's training step (bf16 autocast compiled with torch.compile, bf16
eager, fp32 eager) with samples/s and % of the GPU's dense bf16 peak, and a check that the
compiled step computes the eager step's loss and gradients; cached generation's real-time factor
at batch 1 and batched; a DDP step over nccl on every GPU through torchrun; then the fast tests
with CUDA visible (`--tests` to choose them). Exit 1 if the compiled step differs, the DDP step
or a test fails. Without CUDA: a short CPU part (the `cpu` preset's step and
batch-1 generation), then a line saying the GPU part was skipped, exit 0, so that CI keeps the
script working. The GPU part's figures are what docs/scaling.md's estimates should become.

Ray is not needed: nothing here imports it, and where it is not installed the tests that
import it are skipped (skip_without_ray.py). The data is synthetic (tones and noise in a
temporary dataset): speed does not depend on the audio, and no FluidSynth is needed. A GPU
machine needs no virtual environment, only torch and umtune's other light dependencies
(torchaudio, numpy, soundfile, tqdm; pytest for the tests):

    make gpu-check                      # .venv's python, or python3 where there is no .venv
    python benchmarks/gpu_check.py      # the same, from a checkout, nothing installed by it
    python benchmarks/gpu_check.py --quick   # tiny sizes: checks the script, not the speed

Generation is measured eagerly, without CUDA graphs: the cached step's ring buffers
(umtune/trainable/generate.py) keep their positions on the host, which a captured graph cannot
replay; the output says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DDP_PREFIX = "ddp-result "
# The one-GPU step: two domains (two decoders; compiling all six takes minutes) of this many
# 0.75 s segments each, the per-GPU load of the paper's 32 per domain on 8 GPUs.
STEP_BATCH = 4

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, by a fragment
# of torch.cuda.get_device_name(); the first fragment found wins, so variants come first.
BF16_PEAKS = (("H100 PCIe", 756), ("H100 NVL", 835), ("H100", 989), ("H200", 989),
              ("B200", 2250), ("A100", 312), ("L40S", 362), ("L40", 181), ("L4", 121),
              ("A10", 125))


def bf16_peak(device_name: str) -> float | None:
    return next((peak for part, peak in BF16_PEAKS if part in device_name), None)


def synthetic_dataset(path: Path, domains: tuple[str, ...], sample_rate: int):
    """Two 4-second files of tones and noise per domain, all training split."""
    import numpy as np

    from umtune.data import Dataset
    from umtune.data.writer import DatasetWriter

    rng = np.random.default_rng(0)
    t = np.arange(4 * sample_rate) / sample_rate
    with DatasetWriter(path) as writer:
        for k, domain in enumerate(domains):
            for i in range(2):
                audio = 0.3 * np.sin(2 * np.pi * 110 * (k + i + 1) * t) \
                    + 0.05 * rng.standard_normal(t.size)
                writer.save(f"audio/{domain}/{i}.npy", audio, split="train", domain=domain,
                            piece=f"{domain}-{i}", pitch=None)
        return Dataset.open(writer.commit(sample_rate=sample_rate, domains=domains,
                                          unseen_domains=()))


def random_model(name: str, device: str):
    """Preset `name`'s network with random weights (speed does not depend on them), in eval mode
    on `device`, and its config."""
    import torch

    from umtune.config import preset
    from umtune.trainable.model import UniversalTranslator

    cfg = preset(name)
    torch.manual_seed(0)
    return UniversalTranslator(cfg.model).eval().to(device), cfg


def cpu_part(tmp: Path, quick: bool) -> None:
    import torch
    from generate import cached_rate
    from train_step import measure, step_config

    from umtune.config import preset

    print(f"CPU part (torch threads: {torch.get_num_threads()})")
    data = synthetic_dataset(tmp / "cpu", preset("cpu").model.domains[:2], 8000)
    cfg = step_config("cpu", data, batch_per_domain=1, segment=400 if quick else 0)
    r = measure(cfg, data, steps=1 if quick else 3)
    print(f"  training step, `cpu` preset ({r['precision']}), batch {r['batch']}: "
          f"{r['s/step']:.3f} s/step, {r['samples/s']:.0f} samples/s")
    model, cfg = random_model("cpu", "cpu")
    sr = cfg.data.sample_rate
    rate = cached_rate(model, cfg.model.encoder.pool, 1, 1 if quick else 10)
    print(f"  generation, `cpu` preset, batch 1: {rate:.0f} samples/s = {rate / sr:.3f}x real "
          f"time at {sr} Hz")


def train_rows(data, quick: bool, peak: float | None, matmul: float) -> dict[str, dict]:
    import torch
    from train_step import measure, step_config

    rows = {}
    tf32 = "TF32 convolutions in fp32, " if torch.backends.cudnn.allow_tf32 else ""
    print(f"\ntraining step, `paper` preset, one GPU, 2 domains x {STEP_BATCH} segments "
          f"({tf32}% of the bf16 peaks in every row; compiled: its first step, the "
          "compilation, is not timed)")
    print(f"{'prec':5} {'step':8} {'batch':>12} {'s/step':>7} {'samples/s':>10} "
          f"{'TFLOP/step':>10} {'TFLOP/s':>8} {'% bf16 peak':>11} {'% bf16 matmul':>13}")
    for precision, compiled in (("bf16", False), ("fp32", False), ("bf16", True)):
        cfg = step_config("paper", data, domains=2, batch_per_domain=1 if quick else STEP_BATCH,
                          segment=1600 if quick else 0, precision=precision, compile=compiled)
        name = f"{precision}{' compiled' if compiled else ''}"
        try:
            r = measure(cfg, data, steps=1 if quick else 5, device="cuda")
        except torch.cuda.OutOfMemoryError:
            print(f"{precision:5} out of GPU memory")
            torch.cuda.empty_cache()
            continue
        rows[name] = r
        tflops = r["GFLOP/s"] / 1e3
        of_peak = f"{100 * tflops / peak:10.1f}%" if peak else f"{'?':>11}"
        print(f"{precision:5} {'compiled' if compiled else 'eager':8} {r['batch']:>12} "
              f"{r['s/step']:7.3f} {r['samples/s']:10.0f} {r['GFLOP/step'] / 1e3:10.2f} "
              f"{tflops:8.1f} {of_peak} {100 * tflops / matmul:12.1f}%")
    return rows


def compiled_step_matches(data, quick: bool) -> bool:
    """The compiled step's loss and gradients against the eager step's, on CUDA in bf16, from
    the same weights and batch (tests/test_loop.py checks the same on the CPU)."""
    from train_step import step_config

    from umtune.trainable.loop import Trainer, draw_batch

    cfg = step_config("paper", data, domains=2, batch_per_domain=1 if quick else STEP_BATCH,
                      segment=1600 if quick else 0, precision="bf16")
    results = []
    for compiled in (False, True):
        trainer = Trainer(replace(cfg, train=replace(cfg.train, compile=compiled)), data,
                          device="cuda")
        batch = draw_batch(cfg, data, 0, "train", augment=True)
        loss, *_ = trainer.autoencoder_losses(*(t.cuda() for t in (
            batch.inputs, batch.targets, batch.decoder_inputs, batch.labels)))
        loss.backward()
        results.append((loss.item(), [p.grad.float() for p in
                                      trainer.model.autoencoder.parameters()]))
    (eager, eager_grads), (fast, fast_grads) = results
    worst = max(((a - b).norm() / a.norm().clamp_min(1e-12)).item()
                for a, b in zip(eager_grads, fast_grads, strict=True))
    ok = abs(eager - fast) <= 2e-2 * abs(eager) and worst <= 5e-2
    print(f"compiled step against eager, bf16: loss {fast:.5f} vs {eager:.5f}, largest relative "
          f"gradient difference {worst:.2e}: {'ok' if ok else 'FAILED'}")
    return ok


def generation_rows(quick: bool) -> None:
    from generate import cached_rate

    print("\ngeneration, `paper` preset, cached steps, eager (no CUDA graphs: the ring buffers' "
          "positions live on the host)")
    print(f"{'batch':>5} {'samples/s':>10} {'x real time':>11}")
    model, cfg = random_model("paper", "cuda")
    pool, sr = cfg.model.encoder.pool, cfg.data.sample_rate
    cached_rate(model, pool, 1, 1)  # warm-up: cuBLAS handles, kernels loaded
    for batch in (1, 4) if quick else (1, 16, 64, 256):
        rate = cached_rate(model, pool, batch, 1 if quick else 2)
        print(f"{batch:5d} {rate:10.0f} {rate / sr:11.3f}")


def ddp_row(data_path: Path, gpus: int, quick: bool, single: dict | None) -> bool:
    """The DDP step over nccl on `gpus` processes (torchrun); True if it ran."""
    print(f"\nDDP step over nccl, torchrun --nproc_per_node={gpus}, bf16, the same per-GPU batch "
          "as above")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={gpus}", __file__, "--ddp-worker", str(data_path),
               *(["--quick"] if quick else [])]
    run = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith(DDP_PREFIX)]
    if run.returncode or not lines:
        print(f"FAILED (exit {run.returncode}): {' '.join(command)}\n{run.stdout[-3000:]}"
              f"{run.stderr[-3000:]}")
        return False
    r = json.loads(lines[-1].removeprefix(DDP_PREFIX))
    ratio = f"; {r['samples/s'] / single['samples/s']:.2f}x one GPU without DDP" if single else ""
    print(f"{gpus} GPU(s), global batch {r['batch']}: {r['s/step']:.3f} s/step, "
          f"{r['samples/s']:.0f} samples/s, {r['samples/s'] / gpus:.0f} per GPU{ratio}")
    return True


def ddp_worker(data_path: Path, quick: bool) -> None:
    """One torchrun process: the `paper` step under DistributedDataParallel over nccl."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from train_step import measure, step_config

    from umtune.data import Dataset

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", device_id=device)
    try:
        data = Dataset.open(data_path)
        cfg = step_config("paper", data, domains=2,
                          batch_per_domain=(1 if quick else STEP_BATCH) * world,
                          segment=1600 if quick else 0, precision="bf16")
        r = measure(cfg, data, steps=1 if quick else 5, device=device, rank=rank,
                    world_size=world,
                    wrap=lambda m: DistributedDataParallel(m, device_ids=[local]))
        if rank == 0:
            print(DDP_PREFIX + json.dumps(r), flush=True)
    finally:
        dist.destroy_process_group()


def fast_tests(tests: list[str]) -> bool:
    """`pytest -m "not slow" [tests]` with CUDA visible; without Ray, its tests are skipped."""
    print("\nfast tests, CUDA visible", flush=True)
    if importlib.util.find_spec("pytest") is None:
        print("FAILED: pytest is not installed (pip install pytest)")
        return False
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", *tests]
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    if importlib.util.find_spec("ray") is None:
        print("Ray is not installed: tests that import it are skipped (skip_without_ray.py)")
        command += ["-p", "skip_without_ray"]
        paths.insert(0, str(ROOT / "benchmarks"))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, paths))}
    return subprocess.run(command, cwd=ROOT, env=env).returncode == 0


def gpu_part(tmp: Path, quick: bool, tests: list[str]) -> int:
    import torch
    from train_step import matmul_peak

    from umtune.config import preset

    name, gpus = torch.cuda.get_device_name(), torch.cuda.device_count()
    peak = bf16_peak(name)
    matmul = matmul_peak(torch.bfloat16, "cuda", n=1024 if quick else 8192, reps=20) / 1e3
    print(f"\nGPU part: {gpus} x {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"bf16 dense peak {f'{peak} TFLOP/s' if peak else 'not in BF16_PEAKS'}, "
          f"bf16 matmul measured {matmul:.0f} TFLOP/s")
    data = synthetic_dataset(tmp / "paper", preset("paper").model.domains, 16000)
    single = train_rows(data, quick, peak, matmul)
    compiled_ok = compiled_step_matches(data, quick)
    generation_rows(quick)
    ddp_ok = ddp_row(data.path, gpus, quick, single.get("bf16"))
    tests_ok = fast_tests(tests)
    print(f"\ngpu-check: compiled step {'ok' if compiled_ok else 'FAILED'}, DDP "
          f"{'ok' if ddp_ok else 'FAILED'}, fast tests {'passed' if tests_ok else 'FAILED'}")
    return 0 if compiled_ok and ddp_ok and tests_ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--tests", nargs="*", default=[],
                   help="test files or ids for the fast tests with CUDA (default: all)")
    p.add_argument("--ddp-worker", type=Path, metavar="DATA", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(1, str(ROOT))  # this checkout's umtune, installed or not
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.quick)
        return 0
    import torch

    with tempfile.TemporaryDirectory(prefix="umtune-gpu-check-") as tmp:
        cpu_part(Path(tmp), args.quick)
        if not torch.cuda.is_available():
            print("no CUDA GPU: skipped the GPU part (paper-preset step, generation, DDP over "
                  "nccl, fast tests with CUDA)")
            return 0
        return gpu_part(Path(tmp), args.quick, args.tests)


if __name__ == "__main__":
    sys.exit(main())
