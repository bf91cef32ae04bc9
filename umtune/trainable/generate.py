"""Autoregressive generation with an explicit activation cache, and translation j -> k.

Generating sample t with a WaveNet only needs, per layer, the layer's input at t - d*(k-1) ..
t - d (fast-wavenet's "convolution queues"): one ring buffer of (kernel-1)*dilation past inputs
per dilated layer. Each new sample then costs one step per layer instead of a pass over the
whole receptive field. The cache is a separate object built from the decoders and the batch
size; the step multiplies the decoders' own weights (`DecoderStack`: several decoders of one
architecture step together, so translating into every domain costs about one decoder's steps).

Translation (paper section 3): encode a clip of any domain with the shared encoder, decode the
latent with the target domain's decoder. A long clip is cut into chunks of latent frames that
are generated side by side as one batch, as are several clips; each chunk is entered through a
lead-in (`Sampling`), so it does not restart from silence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor
from tqdm import tqdm

from umtune.config import RunConfig
from umtune.trainable.checkpoint import load_model
from umtune.trainable.model import (
    UniversalTranslator,
    WaveNetDecoder,
    codes_to_input,
    mu_law_decode,
)


class RingBuffer:
    """The last `length` values of a (B, C) stream; reads the values `lags` steps ago."""

    def __init__(self, batch: int, channels: int, length: int, device, dtype):
        self.buffer = torch.zeros(batch, channels, length, device=device, dtype=dtype)
        self.length = length
        self.position = 0  # index the next value is written to = index of the oldest value

    def reset(self) -> None:
        self.buffer.zero_()
        self.position = 0

    def window(self, x: Tensor, stride: int) -> Tensor:
        """(B, C, k): the values stride*(k-1), ..., stride steps ago, then x; then push x."""
        lags = range(self.length, 0, -stride)  # oldest first
        idx = torch.tensor([(self.position - lag) % self.length for lag in lags])
        past = self.buffer.index_select(2, idx.to(self.buffer.device))
        self.buffer[:, :, self.position] = x
        self.position = (self.position + 1) % self.length
        return torch.cat([past, x.unsqueeze(-1)], dim=2)


class DecoderStack:
    """G decoders of one architecture whose generation steps run together.

    Each 1x1 or dilated conv becomes a (G, in * kernel, out) matrix and a (G, 1, out) bias, so
    one step of all G decoders is one batched matmul per conv: the Python work of a step, which
    dominates at small batches, is paid once for every decoder. With one decoder the matrices
    are views of its own weights; with several, stacked copies made once per generation call.
    """

    def __init__(self, decoders: Sequence[WaveNetDecoder]):
        first = decoders[0]
        shape = [(type(p), p.shape) for p in first.parameters()]
        for d in decoders[1:]:
            if [(type(p), p.shape) for p in d.parameters()] != shape or [
                    layer.dilation for layer in d.layers] != [layer.dilation for layer in
                                                              first.layers]:
                raise ValueError("DecoderStack needs decoders of one architecture")
        self.decoders = list(decoders)
        self.kernel_size = first.kernel_size
        self.classes = first.classes
        self.residual_channels = first.start.out_channels
        self.dilations = [layer.dilation for layer in first.layers]

        def stacked(conv_of) -> tuple[Tensor, Tensor]:
            mats = [(c.weight.flatten(1).T, c.bias[None]) for c in map(conv_of, decoders)]
            if len(mats) == 1:
                return mats[0][0][None], mats[0][1][None]
            return torch.stack([w for w, _ in mats]), torch.stack([b for _, b in mats])

        self.start = stacked(lambda d: d.start)
        self.start_skip = stacked(lambda d: d.start_skip)
        self.dilated = [stacked(lambda d, i=i: d.layers[i].dilated) for i in
                        range(len(self.dilations))]
        self.res_skip = [stacked(lambda d, i=i: d.layers[i].res_skip) for i in
                         range(len(self.dilations))]
        self.head_hidden = stacked(lambda d: d.head_hidden)
        self.head_out = stacked(lambda d: d.head_out)

    def __len__(self) -> int:
        return len(self.decoders)

    def project_condition(self, z: Tensor) -> list[Tensor]:
        """Latents (G, B, L, F), one batch per decoder -> per-layer and head conditioning,
        each (G, B, C, F)."""
        per_decoder = [d.project_condition(zg) for d, zg in zip(self.decoders, z, strict=True)]
        return [torch.stack(parts)[..., 0] for parts in zip(*per_decoder, strict=True)]


class DecoderCache:
    """Per-layer queues of past inputs for a `DecoderStack` and batch size; start at silence.

    A fresh cache equals a decoder that has seen only zeros before t = 0: the zero padding of
    the teacher-forced forward pass.
    """

    def __init__(self, stack: DecoderStack, batch: int, device=None, dtype=torch.float32):
        k, rows = stack.kernel_size, len(stack) * batch
        self.start = RingBuffer(rows, 1, k - 1, device, dtype)
        self.layers = [RingBuffer(rows, stack.residual_channels, (k - 1) * d, device, dtype)
                       for d in stack.dilations]
        self.batch = batch
        self.steps = 0

    def reset(self) -> None:
        for queue in (self.start, *self.layers):
            queue.reset()
        self.steps = 0


def _apply(weights: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """x (G, B, in) through stacked matrices (G, in, out) and biases (G, 1, out)."""
    return torch.baddbmm(weights[1], x, weights[0])


@torch.no_grad()
def decoder_step(stack: DecoderStack, x: Tensor, conds: Sequence[Tensor],
                 cache: DecoderCache) -> Tensor:
    """Logits (G, B, classes) of every decoder's next sample.

    Args:
        x: (G, B) each decoder's input at this step: its previous sample scaled by
            `codes_to_input` (0 at t = 0, as the teacher-forced shift pads).
        conds: per-layer and head conditioning of the current latent frame, each (G, B, C).
        cache: the stack's cache; advanced by one step.
    """
    G, B = x.shape
    h = _apply(stack.start, cache.start.window(x.reshape(G * B, 1), 1).view(G, B, -1))
    skip = _apply(stack.start_skip, h)  # (G, B, S)
    R = stack.residual_channels
    for dilated, res_skip, queue, d, cond in zip(stack.dilated, stack.res_skip, cache.layers,
                                                 stack.dilations, conds, strict=False):
        gate = _apply(dilated, queue.window(h.reshape(G * B, R), d).view(G, B, -1)) + cond
        a, b = gate.chunk(2, dim=-1)
        out = _apply(res_skip, torch.tanh(a) * torch.sigmoid(b))  # (G, B, R + S)
        h = h + out[..., :R]
        skip = skip + out[..., R:]
    cache.steps += 1
    hidden = _apply(stack.head_hidden, F.relu(skip)) + conds[-1]
    return _apply(stack.head_out, F.relu(hidden))  # (G, B, classes)


def cached_logits(stack: DecoderStack, z: Tensor, pool: int):
    """logits(t, codes (G, B, T)) -> (G, B, classes) through a fresh cache, for latents z
    (G, B, L, F); must be called for t = 0, 1, 2, ... in order."""
    cache = DecoderCache(stack, z.shape[1], device=z.device, dtype=z.dtype)
    conds = stack.project_condition(z)

    def logits(t: int, codes: Tensor) -> Tensor:
        x = codes_to_input(codes[..., t - 1], stack.classes) if t > 0 else \
            torch.zeros(codes.shape[:2], device=codes.device)
        frame = t // pool
        return decoder_step(stack, x, [c[..., frame] for c in conds], cache)

    return logits


def naive_logits(stack: DecoderStack, z: Tensor, pool: int):
    """Reference for tests and benchmarks: a full teacher-forced pass for every sample."""

    def logits(t: int, codes: Tensor) -> Tensor:
        frames = t // pool + 1
        return torch.stack([d(c[:, : frames * pool], zg[:, :, :frames])[:, :, t]
                            for d, c, zg in zip(stack.decoders, codes, z, strict=True)])

    return logits


@torch.no_grad()
def generate_stacked(decoders: Sequence[WaveNetDecoder], z: Tensor, pool: int, *, seed: int = 0,
                     temperature: float = 1.0, naive: bool = False,
                     progress: bool = False) -> Tensor:
    """Sample mu-law codes (G, B, F * pool): decoder g conditioned on its latents z[g] (z is
    (G, B, L, F)); `temperature` < 1 sharpens every sample's distribution (1: the trained one)."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: expected a positive number (1 samples "
                         f"the trained distribution, below 1 sharpens it)")
    stack = DecoderStack(decoders)
    G, B, _, frames = z.shape
    logits_fn = (naive_logits if naive else cached_logits)(stack, z, pool)
    codes = torch.zeros(G, B, frames * pool, dtype=torch.long, device=z.device)
    generator = torch.Generator(device=z.device).manual_seed(seed)
    for t in tqdm(range(frames * pool), disable=not progress, unit="sample", leave=False):
        probs = torch.softmax(logits_fn(t, codes).float() / temperature, dim=-1)
        codes[..., t] = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(G, B)
    return codes


def generate(decoder: WaveNetDecoder, z: Tensor, pool: int, **options) -> Tensor:
    """Sample mu-law codes (B, F * pool) from one decoder conditioned on z (B, L, F); the
    options of `generate_stacked`."""
    return generate_stacked([decoder], z[None], pool, **options)[0]


@dataclass(frozen=True)
class Sampling:
    """How a translation is generated.

    A clip is cut into chunks of `chunk_seconds` generated side by side as one batch. Each chunk
    starts `lead_seconds` early, on the latent of the audio before it, and that lead-in is
    dropped but for its last `CROSSFADE_SECONDS`, which crossfade with the previous chunk's end:
    the decoder enters each chunk already playing, instead of restarting from silence (a false
    attack per chunk). Cost: (chunk + lead) / chunk times the samples of the clip.
    """

    chunk_seconds: float = 0.5
    lead_seconds: float = 0.1
    temperature: float = 1.0  # 1 samples the trained distribution; below 1 sharpens it
    seed: int = 0

    def __post_init__(self):
        for name, low in (("chunk_seconds", 0.0), ("lead_seconds", None), ("temperature", 0.0)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (
                value > low if low is not None else value >= 0)
            if not ok:
                raise ValueError(f"{name}={value!r}: expected a finite number "
                                 f"{'> 0' if low is not None else '>= 0'}")

    def frames(self, seconds: float, sample_rate: int, pool: int) -> int:
        return round(seconds * sample_rate / pool)


CROSSFADE_SECONDS = 0.01
DEFAULT_SAMPLING = Sampling()


@dataclass
class Translator:
    """A trained network ready to translate audio into any of its domains.

    Args:
        model: the network, in eval mode.
        config: its run config (domains, pool, sample rate).
    """

    model: UniversalTranslator
    config: RunConfig

    @property
    def sample_rate(self) -> int:
        return self.config.data.sample_rate

    @property
    def domains(self) -> tuple[str, ...]:
        return self.config.model.domains

    def translate(self, waveform: Tensor | np.ndarray, sr: int, to: str,
                  sampling: Sampling = DEFAULT_SAMPLING, *, progress: bool = False) -> Tensor:
        """Translate one clip (T,) or (channels, T) at rate `sr` into domain `to`; returns a
        mono waveform at `self.sample_rate`."""
        return self.translate_batch([waveform], sr, to, sampling, progress=progress)[0]

    def translate_batch(self, waveforms: Sequence[Tensor | np.ndarray], sr: int, to: str,
                        sampling: Sampling = DEFAULT_SAMPLING, *,
                        progress: bool = False) -> list[Tensor]:
        """Translate several clips into `to` at once: every chunk of every clip is a batch row."""
        return self.translate_many({to: waveforms}, sr, sampling, progress=progress)[to]

    @torch.no_grad()
    def translate_many(self, jobs: Mapping[str, Sequence[Tensor | np.ndarray]], sr: int,
                       sampling: Sampling = DEFAULT_SAMPLING, *,
                       progress: bool = False) -> dict[str, list[Tensor]]:
        """Translate clips into several domains at once ({target: clips}): the target decoders
        generate side by side (`DecoderStack`), each from the chunks of its own clips."""
        unknown = [to for to in jobs if to not in self.domains]
        if unknown:
            raise ValueError(f"unknown target domain {unknown[0]!r}: this checkpoint has "
                             f"{', '.join(self.domains)}")
        pool = self.config.model.encoder.pool
        prepared = {to: [self._prepare(w, sr) for w in waveforms] for to, waveforms in
                    jobs.items()}
        longest = max(math.ceil(a.shape[-1] / pool) for clips in prepared.values() for a in clips)
        chunk = max(1, min(longest, sampling.frames(sampling.chunk_seconds, self.sample_rate,
                                                    pool)))
        lead = sampling.frames(sampling.lead_seconds, self.sample_rate, pool)
        rows, latents = {}, []
        for to, clips in prepared.items():
            chunks = [self._chunk_latents(audio, chunk, lead) for audio in clips]
            rows[to] = [z.shape[0] for z in chunks]
            latents.append(torch.cat(chunks))  # (rows, L, lead + chunk)
        width = max(z.shape[0] for z in latents)
        z = torch.stack([F.pad(z, (0, 0, 0, 0, 0, width - z.shape[0])) for z in latents])
        codes = generate_stacked([self.model.decoders[to] for to in jobs], z, pool,
                                 seed=sampling.seed, temperature=sampling.temperature,
                                 progress=progress)  # (G, width, (lead + chunk) * pool)
        audio = mu_law_decode(codes, self.config.model.classes)
        fade = min(lead * pool, chunk * pool, round(CROSSFADE_SECONDS * self.sample_rate))
        return {to: [stitch_chunks(clip, lead * pool - fade, fade)[:a.shape[-1]].cpu()
                     for clip, a in zip(per_target.split(rows[to]), prepared[to], strict=False)]
                for to, per_target in zip(jobs, audio, strict=True)}

    def _chunk_latents(self, audio: Tensor, chunk: int, lead: int) -> Tensor:
        """A prepared clip's latent cut into chunks of `chunk` frames, each with the `lead`
        frames before it (silence before the clip): (chunks, L, lead + chunk)."""
        pool = self.config.model.encoder.pool
        n = audio.shape[-1]
        frames = math.ceil(n / pool / chunk) * chunk
        audio = F.pad(audio, (lead * pool, frames * pool - n))
        z = self.model.encode(audio.unsqueeze(0))[0]  # (L, lead + frames)
        return z.unfold(1, lead + chunk, chunk).transpose(0, 1)

    def _prepare(self, waveform: Tensor | np.ndarray, sr: int) -> Tensor:
        audio = (waveform.detach().float().cpu() if isinstance(waveform, Tensor)
                 else torch.from_numpy(np.asarray(waveform, dtype=np.float32)))
        if audio.ndim == 2:
            audio = audio.mean(dim=0)
        if audio.ndim != 1 or audio.numel() == 0:
            raise ValueError(f"expected a mono (T,) or (channels, T) waveform, got shape "
                             f"{tuple(audio.shape)}")
        if sr != self.sample_rate:
            audio = AF.resample(audio, sr, self.sample_rate)
        return audio.clamp(-1.0, 1.0).to(next(self.model.parameters()).device)


def stitch_chunks(chunks: Tensor, drop: int, fade: int) -> Tensor:
    """Join consecutive chunks (n, drop + fade + C) into one waveform (n * C,).

    Each row's first `drop` samples are discarded; its next `fade` samples cover the same
    time as the previous row's last `fade` and are crossfaded with them (raised cosine). The
    first row's lead-in lies before the clip and is dropped whole.
    """
    n, width = chunks.shape
    c = width - drop - fade
    body = chunks[:, drop:]  # (n, fade + C): starts `fade` samples before the chunk
    if fade == 0:
        return body.flatten()
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(fade, device=chunks.device) + 0.5)
                                 / fade)
    weight = torch.ones(n, fade + c, device=chunks.device, dtype=chunks.dtype)
    weight[:, :fade] = ramp  # fade in over the overlap with the previous chunk
    weight[:-1, -fade:] *= 1 - ramp  # fade out where the next chunk fades in
    where = (torch.arange(n, device=chunks.device)[:, None] * c
             + torch.arange(fade + c, device=chunks.device))  # (n, fade + C) positions
    out = torch.zeros(fade + n * c, device=chunks.device, dtype=chunks.dtype)
    return out.index_add_(0, where.flatten(), (body * weight).flatten())[fade:]


def load_translator(checkpoint: str | Path, device: str | torch.device = "cpu") -> Translator:
    """Load a checkpoint written by training as a `Translator` (eval mode)."""
    model, cfg = load_model(Path(checkpoint), map_location=device)
    return Translator(model=model, config=cfg)
