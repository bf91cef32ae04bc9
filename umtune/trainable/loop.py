"""The training loop: one function that runs alone or as a Ray Train worker.

Each step follows the paper (section 3.2) and the official code: the confusion network steps
first, on the latent of the clean input; then the encoder and decoders step on the augmented
input with the clean target, their loss being CE - lambda * CE_confusion. Every step draws one
batch holding every domain (rows grouped by domain), so a single forward uses every parameter.

All randomness of step s (segments, augmentation, dropout) is derived from (seed, s), so a run
resumed from a checkpoint continues exactly as if it had never stopped, and a batch split over
W workers is the same global batch as on one worker. Ray is never imported here: the loop
talks to the outside world through `report(metrics, checkpoint_dir)` and uses
torch.distributed only when a process group is initialised (by Ray Train or torchrun).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from umtune.config import RunConfig
from umtune.data import Dataset
from umtune.layout import HELDOUT_METRIC
from umtune.storage import process_alive
from umtune.trainable import precision
from umtune.trainable.augment import apply_shifts, sample_shifts
from umtune.trainable.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from umtune.trainable.content import content_loss
from umtune.trainable.model import (
    UniversalTranslator,
    audio_to_codes,
    codes_to_audio,
    codes_to_input,
    decoder_receptive_field,
    encoder_input,
    encoder_receptive_field,
    generation_flops_per_sample,
    latent_use,
    parameter_count,
)
from umtune.trainable.run_folder import LocalRun
from umtune.trainable.tracking import NO_TRACKING, Tracked, Tracking

Report = Callable[[dict, Path | None], None]
# Measures the model at each epoch end (eval mode, no gradients) beside the held-out CE: e.g.
# analysis.indicators, which the loop cannot import (it sits above trainable).
Indicators = Callable[[UniversalTranslator], dict[str, float]]


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the run cannot continue."""

    def __init__(self, message: str, step: int = -1, epoch: int = -1):
        super().__init__(message)
        self.step, self.epoch = step, epoch


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # (K*b, T) encoder input in [-0.5, 0.5], augmented
    clean_inputs: torch.Tensor  # (K*b, T) encoder input of the clean audio
    decoder_inputs: torch.Tensor  # (K*b, T) the targets as input; training adds noise, spans
    targets: torch.Tensor  # (K*b, T) clean mu-law codes (pre-emphasised: `audio_to_codes`)
    labels: torch.Tensor  # (K*b,) domain index of each row


def step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def learning_rate(cfg: RunConfig, step: int, elapsed_seconds: float) -> float:
    """The autoencoder's lr at `step`, `elapsed_seconds` into training (`train.lr_schedule`):
    the paper's step decay, lr * decay ** (step // every), or a cosine from lr to 0 over the
    budget."""
    t = cfg.train
    if t.lr_schedule == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * t.progress(step, elapsed_seconds)))
    return t.lr * t.lr_decay ** (step // t.lr_decay_every)


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from the batch's numpy generator: each random draw of a batch
    gets its own, in a fixed order, so a batch is a function of (seed, step)."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def draw_batch(cfg: RunConfig, data: Dataset, step: int, split: str, *, augment: bool,
               rank: int = 0, world_size: int = 1, seed_offset: int = 0) -> Batch:
    """This rank's rows of the global batch of `step`: every domain, `batch_per_domain` each."""
    seed = (cfg.train.seed, step, seed_offset)
    rng = np.random.default_rng(seed)
    b, length, sr = cfg.data.batch_per_domain, cfg.data.segment_samples, data.sample_rate
    audio = torch.from_numpy(np.concatenate([
        data.segments(domain, split, b, length, rng, rank=rank, world_size=world_size)
        for domain in cfg.model.domains]))  # (K * b/W, T)
    rows_per_domain = b // world_size
    labels = torch.arange(len(cfg.model.domains)).repeat_interleave(rows_per_domain)
    classes, rows = cfg.model.classes, b * len(cfg.model.domains)
    # Random draws are made for the global batch and this rank's rows picked from them.
    mine = torch.cat([torch.arange(k * b, (k + 1) * b)[rank::world_size]
                      for k in range(len(cfg.model.domains))])
    if augment and cfg.train.splice_fraction > 0:
        partners = torch.from_numpy(np.concatenate([
            data.segments(domain, split, b, length, rng, rank=rank, world_size=world_size)
            for domain in cfg.model.domains]))  # other segments of the same domains
        gen = torch_generator(rng)
        chosen = torch.rand(rows, generator=gen) < cfg.train.splice_fraction
        cuts = torch.randint(length // 4, 3 * length // 4 + 1, (rows,), generator=gen)
        audio = splice(audio, partners, cuts[mine], chosen[mine], round(SPLICE_FADE * sr))
    targets = audio_to_codes(audio, cfg.model)
    inputs = clean = encoder_input(audio, classes)
    decoder_inputs = codes_to_input(targets, classes)
    if augment and cfg.train.aug_semitones > 0:
        gen = torch_generator(rng)
        shifts = sample_shifts(rows, length, sr, max_semitones=cfg.train.aug_semitones,
                               min_seconds=cfg.train.aug_min_fraction * length / sr,
                               max_seconds=cfg.train.aug_max_fraction * length / sr,
                               generator=gen)
        shifted = apply_shifts(audio, shifts.rows(mine), sr)
        inputs = encoder_input(shifted, classes)
    if augment and cfg.train.decoder_input_noise > 0:
        gen = torch_generator(rng)
        noise = torch.randn(rows, length, generator=gen)[mine]
        decoder_inputs = decoder_inputs + cfg.train.decoder_input_noise * noise
    if augment and cfg.train.decoder_input_drift > 0:
        gen = torch_generator(rng)
        drift = slow_noise(rows, length, cfg.train.decoder_input_drift_hz / sr, gen)[mine]
        decoder_inputs = decoder_inputs + cfg.train.decoder_input_drift * drift
    fraction = decoder_mask_fraction(cfg, step)
    if augment and fraction > 0:
        gen = torch_generator(rng)
        masked = span_mask(rows, length, fraction, cfg.train.decoder_mask_span, gen)[mine]
        decoder_inputs = decoder_inputs.masked_fill(masked, 0.0)
    return Batch(inputs=inputs, clean_inputs=clean, decoder_inputs=decoder_inputs,
                 targets=targets, labels=labels)


SPLICE_FADE = 0.005  # seconds of crossfade at a splice


def slow_noise(rows: int, length: int, cutoff: float, generator: torch.Generator,
               ) -> torch.Tensor:
    """(rows, length) Gaussian noise of unit variance below ~`cutoff` (a fraction of the
    sample rate): white noise through a one-pole low-pass, started in its stationary state."""
    a = math.exp(-2 * math.pi * cutoff)
    white = torch.randn(rows, length, generator=generator, dtype=torch.float64)
    white[:, 0] /= math.sqrt(1 - a * a)  # y[0] then has the stationary variance, 1 / (1 - a^2)
    y = AF.lfilter(white, torch.tensor([1.0, -a], dtype=torch.float64),
                   torch.tensor([1.0, 0.0], dtype=torch.float64), clamp=False)
    return (y * math.sqrt(1 - a * a)).float()


def splice(audio: torch.Tensor, partners: torch.Tensor, cuts: torch.Tensor,
           chosen: torch.Tensor, fade: int) -> torch.Tensor:
    """Rows (B, T) where `chosen` continue from their cut on as the partner row does (a
    raised-cosine crossfade of `fade` samples ending at the cut); the others are unchanged.

    Encoder and decoders see the same spliced audio, so at the cut the latent jumps to other
    notes while the decoders' past still holds the old ones: a note change (`train.
    splice_fraction`) that only the latent announces, to teach the decoders to follow it.
    """
    t = torch.arange(audio.shape[1])
    ramp = ((t[None] - (cuts[:, None] - fade)) / max(fade, 1)).clamp(0, 1)  # 0 .. 1 at the cut
    weight = (0.5 - 0.5 * torch.cos(torch.pi * ramp)) * chosen[:, None]  # (B, T)
    return audio + weight.to(audio.dtype) * (partners - audio)


def decoder_mask_fraction(cfg: RunConfig, step: int) -> float:
    """The share of the decoders' input silenced at `step`: linear decay over the steps."""
    f, steps = cfg.train.decoder_mask_fraction, cfg.train.decoder_mask_steps
    return f if steps == 0 else f * max(0.0, 1 - step / steps)


def span_mask(rows: int, length: int, fraction: float, span: int,
              generator: torch.Generator) -> torch.Tensor:
    """(rows, length) bool: spans of `span` samples starting at random positions, about
    `fraction` of each row in all (starts drawn with probability p, where a position is then
    uncovered with probability (1 - p) ** span = 1 - fraction)."""
    p = 1 - (1 - fraction) ** (1 / span)
    starts = (torch.rand(rows, length, generator=generator) < p).float()
    covered = F.max_pool1d(F.pad(starts, (span - 1, 0)).unsqueeze(1), span, stride=1)
    return covered.squeeze(1).bool()


def heldout_batch(cfg: RunConfig, data: Dataset) -> Batch:
    """The fixed held-out segments every epoch is scored on: `train.eval_segments` per domain,
    the same for every training seed (drawn as seed 0's), so that runs of different seeds are
    scored on the same audio."""
    eval_cfg = replace(cfg, data=replace(cfg.data, batch_per_domain=cfg.train.eval_segments),
                       train=replace(cfg.train, seed=0))
    return draw_batch(eval_cfg, data, step=0, split="heldout", augment=False, seed_offset=1)


def _global_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over workers when a process group is running; identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        # nccl reduces only CUDA tensors (on this process's device), gloo CPU ones.
        device = torch.cuda.current_device() if dist.get_backend() == "nccl" else "cpu"
        values = values.to(device, copy=True)
        dist.all_reduce(values)
        values = values.cpu() / dist.get_world_size()
    return values


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


class Trainer:
    """Holds the model, its two optimizers and the step counter; `step()` does one update.

    Args:
        cfg: the run config.
        data: the opened dataset.
        device: where the model lives.
        wrap: wraps a module for data parallelism (e.g. Ray Train's `prepare_model`, which
            returns DistributedDataParallel); identity for one process.
    """

    def __init__(self, cfg: RunConfig, data: Dataset, device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] = lambda m: m, rank: int = 0,
                 world_size: int = 1):
        cfg.data.check_workers(world_size)
        data.check_serves(cfg.data.sample_rate, cfg.model.domains)
        self.cfg, self.data, self.device = cfg, data, torch.device(device)
        self.rank, self.world_size = rank, world_size
        check_memory(cfg, self.device)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every worker
        self.model = UniversalTranslator(cfg.model).to(self.device)
        self.autoencoder = wrap(self.model.autoencoder)
        self.confusion = wrap(self.model.confusion)
        # Fused: one kernel over every parameter (on the CPU the default is a loop of small ops
        # per parameter, ~3x the time).
        self.fused_adam = self.device.type in ("cpu", "cuda")
        self.opt_ae = torch.optim.Adam(self.model.autoencoder.parameters(), lr=cfg.train.lr,
                                       fused=self.fused_adam)
        self.opt_c = torch.optim.Adam(self.model.confusion.parameters(), lr=cfg.train.confusion_lr,
                                      fused=self.fused_adam)
        self.ema = averaged(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.precision = precision.resolve(cfg.train.precision, self.device)
        # The same function compiled: fused elementwise kernels around the convolutions.
        self.autoencoder_losses = torch.compile(self._autoencoder_losses, dynamic=False) \
            if cfg.train.compile else self._autoencoder_losses
        self.step_count = 0
        self.epoch = 0
        self.elapsed_seconds = 0.0

    @property
    def generator_model(self) -> UniversalTranslator:
        """The weights generation uses: their moving average if kept, else the trained ones."""
        return self.model if self.ema is None else self.ema.module

    def autocast(self):
        return precision.autocast(self.precision.precision, self.device)

    def _autoencoder_losses(self, inputs: Tensor, targets: Tensor, decoder_inputs: Tensor,
                            labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """The autoencoder's loss, its reconstruction CE, the confusion net's CE on its latent
        and the content loss (None when off), for one batch."""
        cfg = self.cfg.train
        with self.autocast():
            ce_per_domain, z = self.autoencoder(inputs, targets, decoder_inputs)
            # The unwrapped confusion net: its parameters are not updated here, so no all-reduce.
            adv_logits = _unwrap(self.confusion)(z).float()
        ce = ce_per_domain.mean()
        loss = ce + cfg.confusion_lambda * confusion_penalty(adv_logits, labels,
                                                             cfg.confusion_target)
        content = None
        if cfg.content_loss_weight > 0:  # on the clean audio: the notes, not the shifted ones
            clean = codes_to_audio(targets, self.cfg.model)
            content = content_loss(self.model.autoencoder.content(z.float()), clean,
                                   self.cfg.data.sample_rate, self.cfg.model.encoder.pool)
            loss = loss + cfg.content_loss_weight * content
        return loss, ce, F.cross_entropy(adv_logits, labels), content

    def step(self) -> dict[str, float]:
        """One confusion update then one autoencoder update; returns this step's losses."""
        cfg = self.cfg.train
        torch.manual_seed(step_seed(cfg.seed, self.step_count))  # dropout
        batch = draw_batch(self.cfg, self.data, self.step_count, "train", augment=True,
                           rank=self.rank, world_size=self.world_size)
        batch = Batch(**{f.name: getattr(batch, f.name).to(self.device) for f in fields(batch)})
        for group in self.opt_ae.param_groups:
            group["lr"] = learning_rate(self.cfg, self.step_count, self.elapsed_seconds)

        # 1. Confusion network on the clean input's latent (encoder frozen for this update).
        with torch.no_grad(), self.autocast():
            z_clean = self.model.encoder(batch.clean_inputs)
        with self.autocast():
            conf_logits = self.confusion(z_clean.float())
        conf_loss = F.cross_entropy(conf_logits.float(), batch.labels)
        self.opt_c.zero_grad(set_to_none=True)
        conf_loss.backward()
        nn.utils.clip_grad_value_(self.model.confusion.parameters(), cfg.grad_clip)
        self.opt_c.step()

        # 2. Encoder + decoders on the augmented input: reconstruct, and fool the confusion net.
        decoder_inputs = batch.decoder_inputs if cfg.decoder_self_inputs == 0 else \
            self.with_own_draws(batch)
        loss, ce, adv_loss, content = self.autoencoder_losses(
            batch.inputs, batch.targets, decoder_inputs, batch.labels)
        if _global_mean(torch.isfinite(loss.detach()).float()) < 1:  # on every rank
            raise DivergenceError(f"loss is {loss.item()} at step {self.step_count} "
                                  f"(reconstruction CE {ce.item()}, confusion CE "
                                  f"{adv_loss.item()}) on rank {self.rank}",
                                  step=self.step_count, epoch=self.epoch + 1)
        self.opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(self.model.autoencoder.parameters(), cfg.grad_clip)
        self.opt_ae.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step_count += 1
        accuracy = (conf_logits.argmax(-1) == batch.labels).float().mean()
        return {"train_ce": ce.item(), "confusion_ce": conf_loss.item(),
                "confusion_acc": accuracy.item(),
                **({"content_loss": content.item()} if content is not None else {})}

    @torch.no_grad()
    def with_own_draws(self, batch: Batch) -> Tensor:
        """The batch's decoder input with `train.decoder_self_inputs` of its positions, drawn
        sample by sample, replaced by the decoders' own one-step draws there; masked spans
        (exactly 0, silence, which no code's input value is) stay silent."""
        with self.autocast():
            z = self.model.encoder(batch.inputs)
            draws = self.model.autoencoder.one_step_draws(z, batch.targets, batch.decoder_inputs)
        inputs = batch.decoder_inputs
        swap = (torch.rand(inputs.shape, device=inputs.device) < self.cfg.train.
                decoder_self_inputs) & (inputs != 0)
        return torch.where(swap, codes_to_input(draws, self.cfg.model.classes), inputs)

    @torch.no_grad()
    def heldout_metrics(self) -> dict[str, float]:
        """Held-out CE, latent gain (whole segments and cold starts: `latent_use`) and confusion
        accuracy on a fixed set of held-out segments, of the weights generation uses; with a
        moving average, also the trained weights' CE (`heldout_ce_trained`)."""
        batch = heldout_batch(self.cfg, self.data)
        inputs, targets = batch.clean_inputs.to(self.device), batch.targets.to(self.device)
        field = decoder_receptive_field(self.cfg.model.decoder)
        model = self.generator_model
        self.model.eval()
        with self.autocast():
            z = model.encoder(inputs)
            use = latent_use(model.autoencoder, z, targets, field)
            logits = model.confusion(z.float())
            trained = {} if self.ema is None else {"heldout_ce_trained": self.model.autoencoder(
                inputs, targets)[0].mean().item()}
        labels = batch.labels.to(self.device)
        self.model.train()
        return {HELDOUT_METRIC: use.ce.mean().item(),
                **{f"heldout_ce/{d}": v.item() for d, v in zip(self.cfg.model.domains, use.ce,
                                                               strict=True)},
                "heldout_latent_gain": use.gain.mean().item(),
                "heldout_ce_cold": use.ce_cold.mean().item(),
                "heldout_latent_gain_cold": use.gain_cold.mean().item(),
                "heldout_confusion_acc": (logits.argmax(-1) == labels).float().mean().item(),
                **trained}

    @torch.no_grad()
    def indicators(self, measure: Indicators) -> dict[str, float]:
        self.model.eval()
        try:
            return measure(self.generator_model)
        finally:
            self.model.train()

    def state(self) -> TrainingState:
        return TrainingState(config=self.cfg, model=self.model.state_dict(),
                             autoencoder_optimizer=self.opt_ae.state_dict(),
                             confusion_optimizer=self.opt_c.state_dict(), step=self.step_count,
                             epoch=self.epoch, elapsed_seconds=self.elapsed_seconds,
                             averaged=None if self.ema is None else self.ema.state_dict())

    def load(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.model)
        self.opt_ae.load_state_dict(state.autoencoder_optimizer)
        self.opt_c.load_state_dict(state.confusion_optimizer)
        for optimizer in (self.opt_ae, self.opt_c):  # a run saved unfused resumes fused
            for group in optimizer.param_groups:
                group["fused"] = self.fused_adam
        if self.ema is not None:
            if state.averaged is None:  # turned on at a resume: the average starts here
                self.ema = averaged(self.model, self.cfg.train.ema_decay)
            else:
                self.ema.load_state_dict(state.averaged)
        self.step_count, self.epoch = state.step, state.epoch
        self.elapsed_seconds = state.elapsed_seconds


def training_bytes(cfg: RunConfig) -> int:
    """A lower bound of the memory one training step needs: weights, their gradients and
    Adam's two moments (16 bytes a parameter), and the logits of every sample with their
    gradient. The model's sizes are read off a model on the meta device (no memory)."""
    with torch.device("meta"):
        parameters = parameter_count(UniversalTranslator(cfg.model))
    samples = cfg.data.batch_per_domain * len(cfg.model.domains) * cfg.data.segment_samples
    return 16 * parameters + 2 * 4 * samples * cfg.model.classes


def available_bytes(device: torch.device) -> int | None:
    """Memory this process may still take on `device` (None where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(cfg: RunConfig, device: torch.device) -> None:
    """Refuse a model and batch that cannot fit before building them (the allocator would fail
    later, with a message naming neither)."""
    need, have = training_bytes(cfg), available_bytes(device)
    if have is not None and need > have:
        raise ValueError(f"model.* and data.batch_per_domain x data.segment_samples: training "
                         f"needs at least {need / 2**30:.1f} GiB on {device} (weights, gradients, "
                         f"Adam's moments, the logits), {have / 2**30:.1f} GiB are available; "
                         "expected a smaller model or batch")


def averaged(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights (in eval mode: it is only measured
    and generated from), updated after every step with decay min(decay, (1 + n) / (10 + n)) at
    its n-th update, so that it forgets the random start quickly."""

    @torch.no_grad()
    def update(average: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        weight = 1 - min(decay, (1 + n.item()) / (10 + n.item()))
        torch._foreach_lerp_(average, current, weight)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True).eval()


def confusion_penalty(logits: Tensor, labels: Tensor, target: str) -> Tensor:
    """What the autoencoder adds to its loss, per unit of lambda, to fool the confusion net
    (`train.confusion_target`): minus its cross-entropy ("max_ce", the paper's), or its
    cross-entropy to the uniform distribution ("uniform", bounded below by log K)."""
    if target == "uniform":
        return -F.log_softmax(logits, dim=-1).mean()
    return -F.cross_entropy(logits, labels)


def train(cfg: RunConfig, *, report: Report, resume: Path | None = None,
          device: torch.device | str = "cpu", wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
          rank: int = 0, world_size: int = 1, data: Dataset | None = None,
          indicators: Indicators | None = None, staging: Path | None = None,
          progress: bool = False) -> Trainer:
    """Train until `max_epochs` or `max_minutes`, reporting metrics (and, on rank 0, a
    checkpoint directory) after every epoch.

    Args:
        cfg: the run config.
        report: called once per epoch with the metrics dict and a checkpoint directory (rank 0)
            or None; the directory is deleted after the call, so copy it if you keep it.
        resume: a checkpoint directory to continue from (model, optimizers, step, epoch).
        device, wrap, rank, world_size: how this worker fits in a distributed run.
        data: an opened dataset (default: open `cfg.data.path`).
        indicators: more metrics of the model at each epoch end (every rank computes them).
        staging: where each epoch's checkpoint is written before `report` takes it (default:
            the temporary folder), best beside where report keeps it.
        progress: a progress bar with an ETA through each epoch (on rank 0, on a terminal).
    """
    data = data or Dataset.open(cfg.data.path)
    staging = Path(staging or tempfile.gettempdir())
    remove_dead_staging(staging)
    trainer = Trainer(cfg, data, device=device, wrap=wrap, rank=rank, world_size=world_size)
    if resume is not None:
        trainer.load(load_checkpoint(resume, map_location=trainer.device))
    if rank == 0:
        print(f"precision: {trainer.precision.precision} ({trainer.precision.reason})",
              flush=True)
    samples_per_step = cfg.data.batch_per_domain * len(cfg.model.domains) * cfg.data.segment_samples
    budget = cfg.train.max_minutes * 60
    while not cfg.train.finished(trainer.epoch, trainer.elapsed_seconds):
        start = time.perf_counter()
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(total=cfg.train.steps_per_epoch, desc=f"epoch {trainer.epoch + 1}",
                   unit="step", leave=False, disable=None if progress and rank == 0 else True)
        while steps < cfg.train.steps_per_epoch:
            for k, v in trainer.step().items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
            bar.update()
            spent = trainer.elapsed_seconds + time.perf_counter() - start
            if budget and _global_mean(torch.tensor(float(spent >= budget))) > 0:
                break  # the budget ends inside the epoch: report what was done
        bar.close()
        seconds = time.perf_counter() - start
        trainer.epoch += 1
        trainer.elapsed_seconds += float(_global_mean(torch.tensor(seconds)).item())
        means = _global_mean(torch.tensor([v / steps for v in sums.values()]))
        metrics = {
            "epoch": trainer.epoch, "step": trainer.step_count,
            **dict(zip(sums, means.tolist(), strict=True)),
            **trainer.heldout_metrics(),
            **(trainer.indicators(indicators) if indicators else {}),
            "lr": trainer.opt_ae.param_groups[0]["lr"],
            "precision": trainer.precision.precision,
            "samples_per_s": samples_per_step * steps / seconds,
            "elapsed_s": trainer.elapsed_seconds,
        }
        _report_epoch(trainer, metrics, report, staging)
    return trainer


CHECKPOINT_STAGING = "umtune-ckpt-"  # + pid: each epoch's checkpoint before `report` copies it


def _report_epoch(trainer: Trainer, metrics: dict, report: Report, staging: Path) -> None:
    if trainer.rank != 0:
        report(metrics, None)
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT_STAGING}{os.getpid()}-", dir=staging))
    try:
        report(metrics, save_checkpoint(trainer.state(), tmp / "checkpoint"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_dead_staging(staging: Path) -> None:
    """Remove the checkpoint staging folders that killed processes left in `staging`."""
    for folder in staging.glob(f".{CHECKPOINT_STAGING}*-*"):
        pid = folder.name.removeprefix(f".{CHECKPOINT_STAGING}").split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def train_plain_run(cfg: RunConfig, run_dir: Path, *, resume: bool = False,
                indicators: Indicators | None = None, keep_every_minutes: float = 0.0,
                log: Tracking = NO_TRACKING) -> Trainer:
    """`umtune train`: one process; `run_dir` is the run folder (layout.py; `keep_every_minutes`:
    `FolderKeep`); `log` names live trackers (tracking.py).

    With `resume`, training continues from `run_dir`'s newest checkpoint (the epoch and time
    budgets in `cfg` count the whole run, so raise them to go further).
    """

    run = LocalRun(run_dir, config=cfg,  # config.json with the first epoch
                   keep_every_minutes=keep_every_minutes)
    with run.claim(new=not resume):  # one process at a time trains into run_dir
        print(describe(cfg))
        report = Tracked(run, log, run.run_dir, cfg) if log else run
        try:
            return train(cfg, report=report, resume=run.checkpoint if resume else None,
                         indicators=indicators, staging=run.run_dir.parent, progress=True)
        finally:
            if log:
                report.close()


def describe(cfg: RunConfig) -> str:
    """Parameter counts, receptive fields and the cost of generation, for the start of a run
    and `umtune config show`."""
    with torch.device("meta"):  # sizes only: no memory, no initialisation
        model = UniversalTranslator(cfg.model)
    decoder = next(iter(model.decoders.values()))
    sr = cfg.data.sample_rate
    dec = decoder_receptive_field(cfg.model.decoder)
    enc = encoder_receptive_field(cfg.model.encoder)
    return (f"parameters: {parameter_count(model):,} (encoder "
            f"{parameter_count(model.encoder):,}, {len(cfg.model.domains)} decoders x "
            f"{parameter_count(decoder):,}, confusion "
            f"{parameter_count(model.confusion):,})\n"
            f"receptive field: decoder {dec} samples ({dec / sr * 1000:.0f} ms), encoder {enc} "
            f"samples ({enc / sr * 1000:.0f} ms); latent {cfg.model.encoder.latent_channels} "
            f"channels every {cfg.model.encoder.pool} samples\n"
            f"generation: {generation_flops_per_sample(decoder):,} FLOPs per output sample")
