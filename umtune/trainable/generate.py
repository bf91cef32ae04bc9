"""Autoregressive generation with an explicit activation cache, and translation j -> k.

Generating sample t with a WaveNet only needs, per layer, the layer's input at t - d*(k-1) ..
t - d (fast-wavenet's "convolution queues"): one ring buffer of (kernel-1)*dilation past inputs
per dilated layer. Each new sample then costs one step per layer instead of a pass over the
whole receptive field. The cache is a separate object built from the decoder and the batch
size; the step reuses the decoder's own weights (nothing is copied into a second network).

Translation (paper section 3): encode a clip of any domain with the shared encoder, decode the
latent with the target domain's decoder. A long clip is cut into chunks of latent frames that
are generated side by side as one batch, as are several clips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor
from tqdm import tqdm

from umtune.config import RunConfig
from umtune.trainable.checkpoint import load_checkpoint
from umtune.trainable.model import (
    UniversalTranslator,
    WaveNetDecoder,
    codes_to_input,
    mu_law_decode,
    pointwise,
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


class DecoderCache:
    """Per-layer queues of past inputs for one decoder and batch size; start at silence.

    A fresh cache equals a decoder that has seen only zeros before t = 0: the zero padding of
    the teacher-forced forward pass.
    """

    def __init__(self, decoder: WaveNetDecoder, batch: int, device=None, dtype=torch.float32):
        k = decoder.kernel_size
        residual = decoder.start.out_channels
        self.start = RingBuffer(batch, 1, k - 1, device, dtype)
        self.layers = [RingBuffer(batch, residual, (k - 1) * layer.dilation, device, dtype)
                       for layer in decoder.layers]
        self.batch = batch
        self.steps = 0

    def reset(self) -> None:
        for queue in (self.start, *self.layers):
            queue.reset()
        self.steps = 0


def _conv_window(conv: torch.nn.Conv1d, window: Tensor) -> Tensor:
    """A conv's output at the window's last position: (B, C_in, k) -> (B, C_out)."""
    return F.linear(window.flatten(1), conv.weight.flatten(1), conv.bias)


@torch.no_grad()
def decoder_step(decoder: WaveNetDecoder, x: Tensor, conds: Sequence[Tensor],
                 cache: DecoderCache) -> Tensor:
    """Logits (B, classes) of the next sample.

    Args:
        x: (B,) the decoder's input at this step: the previous sample scaled by
            `codes_to_input` (0 at t = 0, as the teacher-forced shift pads).
        conds: per-layer and head conditioning of the current latent frame, each (B, C).
        cache: the decoder's cache; advanced by one step.
    """
    h = _conv_window(decoder.start, cache.start.window(x.unsqueeze(1), 1))  # (B, R)
    skip = pointwise(decoder.start_skip, h)  # (B, S)
    for layer, queue, cond in zip(decoder.layers, cache.layers, conds, strict=False):
        r, s = layer.gate(_conv_window(layer.dilated, queue.window(h, layer.dilation)), cond)
        h = h + r
        skip = skip + s
    cache.steps += 1
    return decoder.head(skip, conds[-1])  # (B, classes)


def cached_logits(decoder: WaveNetDecoder, z: Tensor, pool: int):
    """logits(t, codes) through a fresh cache; must be called for t = 0, 1, 2, ... in order."""
    cache = DecoderCache(decoder, z.shape[0], device=z.device, dtype=z.dtype)
    conds = decoder.project_condition(z)

    def logits(t: int, codes: Tensor) -> Tensor:
        x = codes_to_input(codes[:, t - 1], decoder.classes) if t > 0 else \
            torch.zeros(codes.shape[0], device=codes.device)
        frame = t // pool
        return decoder_step(decoder, x, [c[:, :, frame, 0] for c in conds], cache)

    return logits


def naive_logits(decoder: WaveNetDecoder, z: Tensor, pool: int):
    """Reference for tests and benchmarks: a full teacher-forced pass for every sample."""

    def logits(t: int, codes: Tensor) -> Tensor:
        frames = t // pool + 1
        return decoder(codes[:, : frames * pool], z[:, :, :frames])[:, :, t]

    return logits


@torch.no_grad()
def generate(decoder: WaveNetDecoder, z: Tensor, pool: int, *, seed: int = 0,
             temperature: float = 1.0, naive: bool = False, progress: bool = False) -> Tensor:
    """Sample mu-law codes (B, F * pool) from `decoder` conditioned on the latent z (B, L, F);
    `temperature` < 1 sharpens every sample's distribution (1: the trained one)."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: expected a positive number (1 samples "
                         f"the trained distribution, below 1 sharpens it)")
    B, _, frames = z.shape
    logits_fn = (naive_logits if naive else cached_logits)(decoder, z, pool)
    codes = torch.zeros(B, frames * pool, dtype=torch.long, device=z.device)
    generator = torch.Generator(device=z.device).manual_seed(seed)
    for t in tqdm(range(frames * pool), disable=not progress, unit="sample", leave=False):
        probs = torch.softmax(logits_fn(t, codes).float() / temperature, dim=-1)
        codes[:, t] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return codes


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

    def translate(self, waveform: Tensor | np.ndarray, sr: int, to: str, *,
                  chunk_seconds: float = 0.5, seed: int = 0, temperature: float = 1.0,
                  progress: bool = False) -> Tensor:
        """Translate one clip (T,) or (channels, T) at rate `sr` into domain `to`; returns a
        mono waveform at `self.sample_rate`."""
        return self.translate_batch([waveform], sr, to, chunk_seconds=chunk_seconds, seed=seed,
                                    temperature=temperature, progress=progress)[0]

    @torch.no_grad()
    def translate_batch(self, waveforms: Sequence[Tensor | np.ndarray], sr: int, to: str, *,
                        chunk_seconds: float = 0.5, seed: int = 0, temperature: float = 1.0,
                        progress: bool = False) -> list[Tensor]:
        """Translate several clips at once: every chunk of every clip is one batch row."""
        if to not in self.domains:
            raise ValueError(f"unknown target domain {to!r}: this checkpoint has "
                             f"{', '.join(self.domains)}")
        pool = self.config.model.encoder.pool
        chunk_frames = max(1, round(chunk_seconds * self.sample_rate / pool))
        latents, lengths = [], []
        for w in waveforms:
            audio = self._prepare(w, sr)
            lengths.append(audio.shape[-1])
            frames = math.ceil(audio.shape[-1] / pool / chunk_frames) * chunk_frames
            audio = F.pad(audio, (0, frames * pool - audio.shape[-1]))
            z = self.model.encode(audio.unsqueeze(0))  # (1, L, frames)
            latents.append(z[0].unflatten(1, (-1, chunk_frames)).permute(1, 0, 2))  # (n, L, c)
        rows = [z.shape[0] for z in latents]
        codes = generate(self.model.decoders[to], torch.cat(latents), pool, seed=seed,
                         temperature=temperature, progress=progress)  # (sum n, frames * pool)
        audio = mu_law_decode(codes, self.config.model.classes)
        return [clip.flatten()[:n].cpu() for clip, n in zip(audio.split(rows), lengths,
                                                            strict=True)]

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


def load_translator(checkpoint: str | Path, device: str | torch.device = "cpu") -> Translator:
    """Load a checkpoint written by training as a `Translator` (eval mode)."""
    state = load_checkpoint(Path(checkpoint), map_location=device)
    model = UniversalTranslator(state.config.model)
    model.load_state_dict(state.model)
    return Translator(model=model.to(device).eval(), config=state.config)
