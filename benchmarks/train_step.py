"""Throughput of the full training step (both updates) against this machine's matmul peaks, where
its time goes, and the paper's official step in the same run.

Runs `Trainer.step()` exactly as training does (segment reads, augmentation, confusion update,
autoencoder update), counts its FLOPs with torch.utils.flop_counter, and prints samples/s and
achieved GFLOP/s next to this machine's fp32 and bf16 matmul peaks measured in the same run;
then the step's parts timed alone (data, augmentation, the confusion update, the encoder's and
the decoders' forward and backward, the content head, the optimizer); with `--official SRC`
the official code's training step (its `train_batch`, run on this device) at the same sizes;
with `--compiled` each preset and precision again with `train.compile`; and the step's matmuls
and convolutions replayed alone (the same ops on tensors of the same shapes, strides and
dtypes, each timed on its own): how far the step is from the time its products take by
themselves, about the least a step of the same products on the same libraries can take.

    .venv/bin/python benchmarks/train_step.py --data data/lines8k [--official SRC] [--compiled]

`--official` takes the `src` folder of a checkout of facebookresearch/music-translation (its
`wavenet.py` and `wavenet_models.py` are imported from there, not copied here).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from itertools import chain
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from umtune.config import RunConfig, preset
from umtune.data import Dataset
from umtune.trainable.loop import Trainer, draw_batch

PRESET_SIZES = {"cpu": dict(domains=6, batch_per_domain=2, segment=0),
                "paper": dict(domains=2, batch_per_domain=1, segment=8000)}


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, reps: int = 10,
                budget: float = 10.0) -> float:
    """GFLOP/s of an n x n matmul: the peak this machine reaches in `dtype`, measured. On the
    CPU n is halved while `reps` products would take over `budget` seconds at the rate of a
    256^2 one: a dtype the CPU emulates (bf16 without AVX-512: 2048^3 at 0.9 GFLOP/s is 19 s a
    product) is measured smaller, a native one at n (a GPU's small products are bound by their
    launch, not a measure of its rate)."""
    def rate(a: Tensor, reps: int) -> float:
        a @ a
        if a.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            b = a @ a
        b.sum().item()  # waits for the GPU
        return 2 * a.shape[0]**3 * reps / (time.perf_counter() - start) / 1e9

    a = torch.randn(n, n, device=device).to(dtype)
    if device == "cpu":
        probe = rate(a[:256, :256].contiguous(), 1)
        while n > 256 and 2 * n**3 * reps / (probe * 1e9) > budget:
            n //= 2
    return rate(a[:n, :n].contiguous(), reps)


def emulated(peaks: dict[str, float], dtype: str) -> bool:
    """Whether `dtype`'s matmul peak is below fp32's: emulated, so no ceiling to measure by."""
    return peaks[dtype] < peaks["fp32"]


def percent(gflops: float, peaks: dict[str, float], dtype: str) -> str:
    """gflops as a share of `dtype`'s matmul peak, "-" where that peak is below fp32's (an
    emulated dtype's peak is no ceiling)."""
    if emulated(peaks, dtype):
        return f"{'-':>7}"
    return f"{100 * gflops / peaks[dtype]:6.0f}%"


def step_config(name: str, data: Dataset, *, domains: int | None = None,
                batch_per_domain: int | None = None, segment: int = 0,
                precision: str | None = None, **train) -> RunConfig:
    """Preset `name` on `data`'s first `domains` domains at the data's sample rate (the speed
    does not depend on it), sized for a benchmark (None and 0 keep the preset's); `train` sets
    more fields of its TrainConfig."""
    cfg = preset(name, data.domains[:domains])
    return replace(cfg, data=replace(cfg.data, path=str(data.path), sample_rate=data.sample_rate,
                                     batch_per_domain=batch_per_domain or cfg.data.batch_per_domain,
                                     segment_samples=segment or cfg.data.segment_samples),
                   train=replace(cfg.train, precision=precision or cfg.train.precision, **train))


def samples_per_step(cfg: RunConfig) -> int:
    return cfg.data.batch_per_domain * len(cfg.model.domains) * cfg.data.segment_samples


def in_place_flops(self_shape, a_shape, b_shape, *args, **kwargs) -> int:
    """addmm_ and baddbmm_, which FlopCounterMode does not count (the encoder's products)."""
    return 2 * math.prod(a_shape) * b_shape[-1]


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode, counting the in-place matmuls too (the encoder's products in fp32)."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: in_place_flops,
                                                          torch.ops.aten.baddbmm_: in_place_flops})


PRODUCTS = {torch.ops.aten.mm, torch.ops.aten.bmm, torch.ops.aten.addmm, torch.ops.aten.addmm_,
            torch.ops.aten.baddbmm, torch.ops.aten.baddbmm_, torch.ops.aten.convolution,
            torch.ops.aten.convolution_backward}


class _Layout(tuple):
    """A tensor's shape, strides and dtype: what a replay of its op is given."""


def _layout(arg):
    if isinstance(arg, Tensor):
        return _Layout((tuple(arg.shape), arg.stride(), arg.dtype))
    return tuple(map(_layout, arg)) if isinstance(arg, list) else arg


class ProductRecorder(TorchDispatchMode):
    """Counts the matmuls and convolutions dispatched under it (forward and backward, inside
    custom autograd Functions too) by op and by the layouts of their arguments."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in PRODUCTS:
            self.calls[func, tuple(map(_layout, args)),
                       tuple((k, _layout(v)) for k, v in sorted(kwargs.items()))] += 1
        return func(*args, **kwargs)


def measure(cfg: RunConfig, data: Dataset, steps: int, products: bool = False,
            **trainer_options) -> dict:
    """Seconds and FLOPs of `Trainer.step()`: one step counted, one warm-up, `steps` timed;
    with `products`, the counted step's products recorded (a Counter, not JSON).

    `trainer_options` (device, wrap, rank, world_size) place the trainer; under DDP the rates
    are of the global batch and the FLOPs of this process's share.
    """
    trainer = Trainer(cfg, data, **trainer_options)
    counted = Trainer(replace(cfg, train=replace(cfg.train, compile=False)), data,
                      **trainer_options) if cfg.train.compile else trainer
    with flop_counter() as counter, ProductRecorder() as recorder:
        counted.step()  # the same FLOPs and products compiled or not
    trainer.step()  # warm-up (and, compiled, the compilation)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()  # returns floats: waits for the GPU
    seconds = (time.perf_counter() - start) / steps
    return {"precision": trainer.precision.precision,
            "batch": f"{len(cfg.model.domains)}x{cfg.data.batch_per_domain}x"
                     f"{cfg.data.segment_samples}",
            "s/step": seconds, "samples/s": samples_per_step(cfg) / seconds,
            "GFLOP/step": counter.get_total_flops() / 1e9,
            "GFLOP/s": counter.get_total_flops() / seconds / 1e9,
            **({"products": recorder.calls} if products else {})}


def _timed(fn, reps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _fresh(arg):
    """A new tensor with `arg`'s layout (expanded dimensions included), random values."""
    if not isinstance(arg, _Layout):
        return arg
    shape, stride, dtype = arg
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) if all(shape) else 0
    return torch.randn(size).to(dtype).as_strided(shape, stride)


def replay(func, args: tuple, kwargs: tuple) -> Callable[[], None]:
    """A call of a recorded op on new tensors of its layouts."""
    args, kwargs = tuple(map(_fresh, args)), {k: _fresh(v) for k, v in kwargs}
    return lambda: func(*args, **kwargs)


def products_alone(calls: Counter, reps: int) -> tuple[float, float]:
    """Seconds and GFLOP of the recorded CPU products, each replayed on its own, times its
    count."""
    seconds = flops = 0.0
    for (func, args, kwargs), count in calls.items():
        call = replay(func, args, kwargs)
        with flop_counter() as counter:
            call()
        seconds += count * _timed(call, reps)
        flops += count * counter.get_total_flops()
    return seconds, flops / 1e9


def parts(cfg: RunConfig, data: Dataset, reps: int) -> dict[str, float]:
    """Seconds per step of each part of `Trainer.step()`, each timed alone on the same batch."""
    trainer = Trainer(cfg, data)
    model, autocast = trainer.model, trainer.autocast
    batch = draw_batch(cfg, data, 0, "train", augment=True)
    out = {"data": _timed(lambda: draw_batch(cfg, data, 0, "train", augment=False), reps)}
    out["augmentation"] = max(0.0, _timed(lambda: draw_batch(cfg, data, 0, "train", augment=True),
                                          reps) - out["data"])

    def encoder():
        with autocast():
            z = model.encoder(batch.inputs)
        z.float().square().mean().backward()

    with torch.no_grad(), autocast():
        z = model.encoder(batch.inputs).float()

    def decoders():
        with autocast():
            ce = model.autoencoder.reconstruction_ce(z, batch.targets, batch.decoder_inputs)
        ce.mean().backward()

    def confusion():
        with autocast():
            logits = model.confusion(z)
        F.cross_entropy(logits.float(), batch.labels).backward()

    out.update(encoder=_timed(encoder, reps), decoders=_timed(decoders, reps),
               confusion=_timed(confusion, reps))
    trainer.step()  # every parameter has a gradient and Adam its state
    out["optimizer"] = _timed(lambda: (trainer.opt_ae.step(), trainer.opt_c.step()), reps)
    return out


def official_step(src: Path, cfg: RunConfig, steps: int) -> dict:
    """Seconds of the official `train_batch` (its two updates, its modules, fp32 as it runs) on
    this device for one domain's batch at the sizes of `cfg` (the official decoder has no
    separate gate width: 2 x residual; its per-step batch is one domain's)."""
    sys.path.insert(0, str(src))
    from wavenet import WaveNet  # the official code
    from wavenet_models import Encoder, ZDiscriminator, cross_entropy_loss

    m = cfg.model
    if m.decoder.gate_channels != 2 * m.decoder.residual_channels:
        raise SystemExit("--official: the preset's gate_channels != 2 x residual_channels")
    args = Namespace(encoder_blocks=m.encoder.blocks, encoder_layers=m.encoder.layers_per_block,
                     encoder_channels=m.encoder.channels, latent_d=m.encoder.latent_channels,
                     encoder_func="relu", encoder_pool=m.encoder.pool, blocks=m.decoder.blocks,
                     layers=m.decoder.layers_per_block, kernel_size=m.decoder.kernel_size,
                     residual_channels=m.decoder.residual_channels,
                     skip_channels=m.decoder.skip_channels, n_datasets=len(m.domains),
                     d_layers=m.confusion.layers, d_channels=m.confusion.channels,
                     p_dropout_discriminator=m.confusion.dropout)
    torch.manual_seed(0)
    encoder, decoder, discriminator = Encoder(args), WaveNet(args), ZDiscriminator(args)
    model_optimizer = torch.optim.Adam(chain(encoder.parameters(), decoder.parameters()), 1e-3)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), 1e-3)
    rows = cfg.data.batch_per_domain * len(m.domains)
    x = torch.randint(0, 256, (rows, cfg.data.segment_samples)).float()
    x_aug, labels, lam = x.roll(1, dims=-1), torch.zeros(rows, dtype=torch.long), 1e-2

    def train_batch():  # train.py's Trainer.train_batch, on this device
        z = encoder(x)
        loss = F.cross_entropy(discriminator(z), labels).mean() * lam
        d_optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(discriminator.parameters(), 1.0)
        d_optimizer.step()
        z = encoder(x_aug)
        y = decoder(x, z)
        wrong = -F.cross_entropy(discriminator(z), labels).mean()
        loss = cross_entropy_loss(y, x).mean() + lam * wrong
        model_optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(chain(encoder.parameters(), decoder.parameters()), 1.0)
        model_optimizer.step()
        return loss.item()

    seconds = _timed(train_batch, steps)
    return {"s/step": seconds, "samples/s": rows * cfg.data.segment_samples / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/lines8k")
    p.add_argument("--presets", default="cpu,paper")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--compiled", action="store_true",
                   help="also time each preset and precision with train.compile (the first "
                   "step, which compiles, is the warm-up)")
    p.add_argument("--official", type=Path, help="src folder of the official code")
    args = p.parse_args()
    data = Dataset.open(args.data)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"threads: {torch.get_num_threads()}  matmul peak: fp32 {peaks['fp32']:.3g} GFLOP/s, "
          f"bf16 {peaks['bf16']:.3g} GFLOP/s")
    if emulated(peaks, "bf16"):
        print("bf16 is emulated on this CPU (its peak is below fp32's): no % of its peak")
    print(f"{'preset':7} {'step':9} {'prec':5} {'batch':>12} {'s/step':>7} {'samples/s':>10} "
          f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'% fp32':>7} {'% bf16':>7}")
    configs, eager = {}, {}
    for name in args.presets.split(","):
        for prec in args.precisions.split(","):
            cfg = configs[name, prec] = step_config(name, data, **PRESET_SIZES[name],
                                                    precision=prec)
            for step, compiled in (("umtune", False), ("compiled", True))[:1 + args.compiled]:
                r = measure(replace(cfg, train=replace(cfg.train, compile=compiled)), data,
                            args.steps, products=True)
                eager.setdefault((name, prec), r)
                print(f"{name:7} {step:9} {r['precision']:5} {r['batch']:>12} "
                      f"{r['s/step']:7.3f} {r['samples/s']:10.0f} {r['GFLOP/step']:10.1f} "
                      f"{r['GFLOP/s']:8.1f} {percent(r['GFLOP/s'], peaks, 'fp32')} "
                      f"{percent(r['GFLOP/s'], peaks, 'bf16')}")
        if args.official:
            o = official_step(args.official, configs[name, args.precisions.split(",")[0]],
                              args.steps)
            print(f"{name:7} {'official':9} {'fp32':5} {'':>12} {o['s/step']:7.3f} "
                  f"{o['samples/s']:10.0f}")
    print("\nwhere a step's time goes (seconds, each part timed alone on one batch):")
    names = ("data", "augmentation", "confusion", "encoder", "decoders", "optimizer")
    print(f"{'preset':7} {'prec':5} " + " ".join(f"{n:>12}" for n in names))
    for (name, prec), cfg in configs.items():
        t = parts(cfg, data, args.steps)
        print(f"{name:7} {prec:5} " + " ".join(f"{t[n]:12.3f}" for n in names))
    print("\nthe step's matmuls and convolutions replayed alone (same ops, shapes, strides and "
          "dtypes, each on its own):")
    print(f"{'preset':7} {'prec':5} {'products':>8} {'GFLOP':>7} {'alone s':>8} {'GFLOP/s':>8} "
          f"{'step s':>7} {'step/alone':>10}")
    for (name, prec), r in eager.items():
        seconds, gflop = products_alone(r["products"], args.steps)
        print(f"{name:7} {prec:5} {sum(r['products'].values()):8d} {gflop:7.1f} {seconds:8.3f} "
              f"{gflop / seconds:8.1f} {r['s/step']:7.3f} {r['s/step'] / seconds:10.2f}")


if __name__ == "__main__":
    main()
