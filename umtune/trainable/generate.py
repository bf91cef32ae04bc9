"""Autoregressive generation with an explicit activation cache, and translation j -> k.

Generating sample t with a WaveNet only needs, per layer, the layer's input at t - d*(k-1) ..
t - d (fast-wavenet's "convolution queues"): a ring of (kernel-1)*dilation past inputs per
dilated layer (`PastInputs`). Each new sample then costs one step per layer instead of a pass
over the whole receptive field. The cache is a separate object built from the decoders and the
batch size; the step multiplies the decoders' weights, folded once (`DecoderStack`: several
decoders of one architecture step together, so translating into every domain costs about one
decoder's steps). The step runs as PyTorch operations (`decoder_step`: any device, batched
matmuls) or compiled (fused.py: CPU, a few rows, where PyTorch's per-operation cost dominates);
`generate_stacked` picks one.

Translation (paper section 3): encode a clip of any domain with the shared encoder, decode the
latent with the target domain's decoder. A long clip is cut into chunks of latent frames that
are generated side by side as one batch, as are several clips; each chunk is entered through a
lead-in (`Sampling`), so it does not restart from silence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn
from tqdm import tqdm

from umtune.config import RunConfig
from umtune.trainable.checkpoint import load_model
from umtune.trainable.fused import FusedSteps, fused_available
from umtune.trainable.model import (
    UniversalTranslator,
    WaveNetDecoder,
    codes_to_audio,
    codes_to_input,
    decoder_receptive_field,
    deemphasize,
)


class DecoderStack:
    """G decoders of one architecture, their weights rearranged to step together cheaply.

    At small batches a step costs its number of tensor operations, not its arithmetic, so the
    weights are folded until a layer costs five (one matmul on the present, tanh, sigmoid, their
    product, one matmul into the residual and skip sums):
    - each dilated conv is split into its taps on the past, which are known before the step
      starts and so run as one batched matmul for all layers, and its tap on the present;
    - biases are a last matrix row (the input carries a trailing 1) or join the per-frame
      conditioning (`Conditioning`);
    - the start conv and the start skip 1x1 compose into one map, and the residual and skip
      sums live in one (R + S) vector that each layer's res_skip output is added to.
    Every conv is a (G, in, out) matrix, so one step of all G decoders is one batched matmul
    per conv: translating into every domain costs about one decoder's steps.
    """

    @torch.no_grad()
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
        self.residual_channels = R = first.start.out_channels
        self.gate_channels = first.gate_channels
        self.dilations = [layer.dilation for layer in first.layers]
        layers = range(len(self.dilations))

        def stacked(matrix_of) -> Tensor:
            return torch.stack([matrix_of(d) for d in decoders]).contiguous()

        def start(d: WaveNetDecoder) -> Tensor:  # (k + 1, R + S): the last k inputs and a 1
            taps = torch.cat([d.start.weight[:, 0].T, d.start.bias[None]])  # (k + 1, R)
            skip = d.start_skip.weight[:, :, 0]  # (S, R)
            with_skip = torch.cat([taps, taps @ skip.T], dim=1)
            with_skip[-1, R:] += d.start_skip.bias
            return with_skip

        def with_bias(conv: nn.Conv1d) -> Tensor:  # a 1x1 conv as (in + 1, out)
            return torch.cat([conv.weight[:, :, 0].T, conv.bias[None]])

        self.start = stacked(start)  # (G, k + 1, R + S)
        # dilated weight (gate, R, k): taps 0 .. k - 2 see the past (oldest first), k - 1 now
        self.past = torch.cat([stacked(lambda d, i=i: d.layers[i].dilated.weight[:, :, :-1]
                                       .permute(2, 1, 0).flatten(0, 1)) for i in layers])
        self.present = torch.stack([stacked(lambda d, i=i: d.layers[i].dilated.weight[:, :, -1]
                                            .T) for i in layers])  # (layers, G, R, gate)
        self.res_skip = torch.stack([stacked(lambda d, i=i: with_bias(d.layers[i].res_skip))
                                     for i in layers])  # (layers, G, gate / 2 + 1, R + S)
        self.layers = list(zip(self.present, self.res_skip, strict=True))  # views, made once
        self.head_hidden = stacked(lambda d: d.head_hidden.weight[:, :, 0].T)
        self.head_out = stacked(lambda d: d.head_out.weight[:, :, 0].T)  # (G, S, classes)
        self.out_bias = stacked(lambda d: d.head_out.bias[None])  # (G, 1, classes)

    def __len__(self) -> int:
        return len(self.decoders)

    @torch.no_grad()
    def condition(self, z: Tensor) -> Conditioning:
        """Latents (G, B, L, F), one batch per decoder -> every frame's biases (the layers'
        own biases included by `project_condition`)."""
        per_decoder = [d.project_condition(zg) for d, zg in zip(self.decoders, z, strict=True)]
        gates = torch.stack([torch.stack(parts[:-1]) for parts in per_decoder], dim=1)
        head = torch.stack([parts[-1] for parts in per_decoder])  # (G, B, F, S)
        return Conditioning(gates=gates.permute(3, 0, 1, 2, 4).flatten(1, 2).contiguous(),
                            head=head.permute(2, 0, 1, 3).contiguous())


@dataclass(frozen=True)
class Conditioning:
    """Each latent frame's gate biases (F, layers * G, B, gate) and head biases (F, G, B, S):
    the layers' own biases plus the projected latent, added once per frame, not per sample."""

    gates: Tensor
    head: Tensor

    def frame(self, index: int) -> tuple[Tensor, Tensor]:
        return self.gates[index], self.head[index]


class PastInputs:
    """Every dilated layer's last (kernel - 1) * dilation inputs in one (slots, rows, C) tensor,
    so that a step reads all layers' past with one index_select and stores their inputs with
    one index_copy_ (a ring per layer: its slots are reused every (kernel - 1) * dilation
    steps)."""

    def __init__(self, dilations: Sequence[int], kernel_size: int, rows: int, channels: int,
                 device=None, dtype=torch.float32):
        lengths = [(kernel_size - 1) * d for d in dilations]
        self.values = torch.zeros(sum(lengths), rows, channels, device=device, dtype=dtype)
        longs = dict(dtype=torch.long, device=device)
        self.lengths = torch.tensor(lengths, **longs)[:, None]
        self.offsets = torch.tensor([0, *lengths[:-1]], **longs).cumsum(0)[:, None]
        self.lags = torch.tensor([[(kernel_size - 1 - j) * d for j in range(kernel_size - 1)]
                                  for d in dilations], **longs)  # (layers, k - 1), oldest first

    def slots(self, t: int) -> Tensor:
        """(layers, k - 1): where each layer's inputs from `lags` steps before t are; the first
        column (the oldest, about to be forgotten) is also where step t's input goes."""
        return (t - self.lags).remainder_(self.lengths).add_(self.offsets)

    def read(self, slots: Tensor) -> Tensor:
        """(layers, k - 1, rows, C)."""
        return self.values[slots.flatten()].view(*slots.shape, *self.values.shape[1:])

    def write(self, slots: Tensor, inputs: Tensor) -> None:
        """Store step t's inputs (layers, rows, C) at `slots(t)`'s first column."""
        self.values.index_copy_(0, slots[:, 0], inputs)

    def reset(self) -> None:
        self.values.zero_()


class DecoderCache:
    """What a `DecoderStack` keeps between the steps of one batch, and the buffers its steps
    write into; starts at silence.

    A fresh cache equals a decoder that has seen only zeros before t = 0: the zero padding of
    the teacher-forced forward pass. Each layer's slices of the buffers are made once here:
    slicing a tensor costs as much as a small operation.
    """

    def __init__(self, stack: DecoderStack, batch: int, device=None, dtype=torch.float32):
        G, B, k = len(stack), batch, stack.kernel_size
        layers, R, half = len(stack.dilations), stack.residual_channels, stack.gate_channels // 2
        sums = stack.start.shape[-1]  # R + S
        self.past = PastInputs(stack.dilations, k, G * B, R, device, dtype)
        self.inputs = torch.zeros(G, B, k + 1, device=device, dtype=dtype)  # last k, then a 1
        self.inputs[..., -1] = 1
        # sums[i]: residual and skip sums entering layer i; sums[-1]: after the last layer
        self.sums = torch.empty(layers + 1, G, B, sums, device=device, dtype=dtype)
        self.gates = torch.empty(layers, G, B, 2 * half, device=device, dtype=dtype)
        self.gated = torch.ones(layers, G, B, half + 1, device=device, dtype=dtype)  # then a 1
        self.tanh = torch.empty(G, B, half, device=device, dtype=dtype)
        self.sigmoid = torch.empty_like(self.tanh)
        self.layer_inputs = self.sums[:-1, ..., :R].flatten(1, 2)  # (layers, G * B, R), a view
        self.all_gates = self.gates.flatten(0, 1)  # (layers * G, B, gate), a view
        self.layers = [(self.gates[i], *self.gates[i].split(half, dim=-1),
                        self.sums[i, ..., :R], self.sums[i], self.gated[i],
                        self.gated[i, ..., :half], self.sums[i + 1]) for i in range(layers)]
        self.batch = batch
        self.steps = 0

    def reset(self) -> None:
        self.past.reset()
        self.inputs[..., :-1] = 0
        self.steps = 0


@torch.no_grad()
def decoder_step(stack: DecoderStack, x: Tensor, frame: tuple[Tensor, Tensor],
                 cache: DecoderCache) -> Tensor:
    """Logits (G, B, classes) of every decoder's next sample.

    Args:
        x: (G, B) each decoder's input at this step: its previous sample scaled by
            `codes_to_input` (0 at t = 0, as the teacher-forced shift pads).
        frame: the current latent frame's biases, `Conditioning.frame`.
        cache: the stack's cache; advanced by one step.
    """
    gate_bias, head_bias = frame
    R = stack.residual_channels
    slots = cache.past.slots(cache.steps)
    past = cache.past.read(slots).transpose(1, 2)  # (layers, G * B, k - 1, R)
    past = past.reshape(gate_bias.shape[0], gate_bias.shape[1], -1)  # (layers * G, B, (k-1) R)
    torch.baddbmm(gate_bias, past, stack.past, out=cache.all_gates)
    inputs = cache.inputs
    inputs[..., :-2] = inputs[..., 1:-1].clone()
    inputs[..., -2] = x
    torch.bmm(inputs, stack.start, out=cache.sums[0])
    for (present, res_skip), (gates, a, b, residual, sums, gated, product, after) in zip(
            stack.layers, cache.layers, strict=True):
        gates.baddbmm_(residual, present)
        torch.mul(torch.tanh(a, out=cache.tanh), torch.sigmoid(b, out=cache.sigmoid), out=product)
        torch.baddbmm(sums, gated, res_skip, out=after)
    cache.past.write(slots, cache.layer_inputs)
    cache.steps += 1
    hidden = torch.baddbmm(head_bias, F.relu(cache.sums[-1, ..., R:]), stack.head_hidden).relu_()
    return torch.baddbmm(stack.out_bias, hidden, stack.head_out)


def cached_logits(stack: DecoderStack, z: Tensor, pool: int):
    """logits(t, codes (G, B, T)) -> (G, B, classes) through a fresh cache, for latents z
    (G, B, L, F); must be called for t = 0, 1, 2, ... in order."""
    cache = DecoderCache(stack, z.shape[1], device=z.device, dtype=z.dtype)
    conditioning = stack.condition(z)
    inputs = codes_to_input(torch.arange(stack.classes, device=z.device), stack.classes)
    silence = torch.zeros(z.shape[:2], device=z.device, dtype=z.dtype)

    def logits(t: int, codes: Tensor) -> Tensor:
        x = inputs[codes[..., t - 1]] if t > 0 else silence
        return decoder_step(stack, x, conditioning.frame(t // pool), cache)

    return logits


def fused_logits(stack: DecoderStack, z: Tensor, pool: int):
    """`cached_logits` through the compiled step (fused.py)."""
    fused = FusedSteps(stack, DecoderCache(stack, z.shape[1]), stack.condition(z), pool,
                       z.shape[-1] * pool)

    def logits(t: int, codes: Tensor) -> Tensor:
        fused.run(codes, t, 1)
        return fused.logits.clone()

    return logits


def naive_logits(stack: DecoderStack, z: Tensor, pool: int):
    """Reference for tests and benchmarks: a full teacher-forced pass for every sample."""

    def logits(t: int, codes: Tensor) -> Tensor:
        frames = t // pool + 1
        return torch.stack([d(c[:, : frames * pool], zg[:, :, :frames])[:, :, t]
                            for d, c, zg in zip(stack.decoders, codes, z, strict=True)])

    return logits


# Up to this many rows (decoders x batch) the compiled step beats PyTorch's on the CPU; above,
# batched matmuls win (benchmarks/generate.py, `paper` preset: even at 16 rows).
FUSED_MAX_ROWS = 16
BACKENDS = ("auto", "fused", "torch", "naive")


@torch.no_grad()
def generate_stacked(decoders: Sequence[WaveNetDecoder], z: Tensor, pool: int, *, seed: int = 0,
                     temperature: float = 1.0, floor: float = 0.0, backend: str = "auto",
                     levels: Tensor | None = None, progress: bool = False) -> Tensor:
    """Sample mu-law codes (G, B, F * pool): decoder g conditioned on its latents z[g] (z is
    (G, B, L, F)); `temperature` < 1 sharpens every sample's distribution (1: the trained one),
    and classes less probable than `floor` (in the trained distribution) are never drawn.
    With `levels` (classes,), return instead each step's expectation of levels[code] under its
    trained distribution (G, B, F * pool) float: the decoders still continue from the sampled
    codes.

    `backend`: "fused" the compiled step (fused.py), "torch" PyTorch's (`decoder_step`),
    "naive" a teacher-forced pass per sample (a reference); "auto" the compiled step for up to
    `FUSED_MAX_ROWS` rows on the CPU where it builds, else PyTorch's. All draw the same noise,
    so they sample the same codes up to float rounding.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r}: expected a positive number (1 samples "
                         f"the trained distribution, below 1 sharpens it)")
    if not 0 <= floor < 1:
        raise ValueError(f"floor={floor!r}: expected a probability in [0, 1)")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    stack = DecoderStack(decoders)
    G, B, _, frames = z.shape
    steps = frames * pool
    if backend == "auto":
        small = z.device.type == "cpu" and G * B <= FUSED_MAX_ROWS
        backend = "fused" if small and fused_available() is None else "torch"
    codes = torch.zeros(G, B, steps, dtype=torch.long, device=z.device)
    means = None if levels is None else torch.zeros(G, B, steps, device=z.device)
    if backend == "fused":
        fused = FusedSteps(stack, DecoderCache(stack, B), stack.condition(z), pool, steps)
    else:
        logits_fn = (naive_logits if backend == "naive" else cached_logits)(stack, z, pool)
    t = 0
    with tqdm(total=steps, disable=not progress, unit="sample", leave=False,
              desc="generating") as bar:
        for noise in gumbel_noise((G, B, stack.classes), steps, seed, z.device):
            if backend == "fused":
                fused.run(codes, t, len(noise), noise, temperature, floor, levels, means)
            else:
                for i, gumbel in enumerate(noise):
                    logits = logits_fn(t + i, codes)
                    if means is not None:
                        means[..., t + i] = logits.softmax(-1) @ levels.to(logits)
                    if floor > 0:
                        logits.masked_fill_(logits < floor_cut(logits, floor), -math.inf)
                    codes[..., t + i] = logits.add_(gumbel, alpha=temperature).argmax(-1)
            t += len(noise)
            bar.update(len(noise))
    return codes if means is None else means


def floor_cut(logits: Tensor, floor: float) -> Tensor:
    """(..., 1): the lowest logit that may be drawn, log(floor) above the logits' logsumexp but
    never above the most likely class's (which is always kept)."""
    cut = logits.logsumexp(-1, keepdim=True) + math.log(floor)
    return torch.minimum(cut, logits.amax(-1, keepdim=True))


def gumbel_noise(shape: tuple[int, ...], steps: int, seed: int, device,
                 block: int = 256) -> Iterator[Tensor]:
    """Gumbel(0, 1) noise (n, *shape) for `steps` steps in all, `block` steps at a time.

    argmax(logits + T * noise) samples softmax(logits / T) (the Gumbel-max trick): two
    operations a step, where softmax and multinomial take several.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    tiny = torch.finfo(torch.float32).tiny
    for start in range(0, steps, block):
        exponential = torch.empty(min(block, steps - start), *shape, device=device)
        yield exponential.exponential_(generator=generator).clamp_min_(tiny).log_().neg_()


def generate(decoder: WaveNetDecoder, z: Tensor, pool: int, **options) -> Tensor:
    """Sample mu-law codes (B, F * pool) from one decoder conditioned on z (B, L, F); the
    options of `generate_stacked`."""
    return generate_stacked([decoder], z[None], pool, **options)[0]


@dataclass(frozen=True)
class Sampling:
    """How a translation is generated: one value, the default everywhere (translate, evaluate,
    the leading indicators), so that every figure describes the same generation.

    A clip is cut into chunks of `chunk_seconds` generated side by side as one batch. Each chunk
    starts early, on the latent of the audio before it, and that lead-in is dropped but for its
    last `CROSSFADE_SECONDS`, which crossfade with the previous chunk's end: the decoder enters
    each chunk already playing, as in training, where its whole receptive field holds real
    samples, instead of restarting from silence. The lead-in is `lead_seconds`, by default
    (None) the decoders' receptive field in whole latent frames. Cost: (chunk + lead) / chunk
    times the samples of the clip.

    Each sample is drawn from the decoder's distribution at `temperature` (1: as trained) after
    the classes less probable than `floor` are removed (LPCNet's pdf floor: the many unlikely
    classes that together make a noise floor). `emit` is what is written: "sample", the drawn
    samples, or "mean", each step's expected value under the decoder's distribution given the
    samples drawn before it (the decoder's belief without the draw's own noise); the decoder
    continues from its samples either way, as in training.
    """

    chunk_seconds: float = 0.5
    lead_seconds: float | None = None
    temperature: float = 0.8  # docs/results.md, "Generation": chosen by the translation metrics
    floor: float = 0.0
    emit: str = "mean"
    seed: int = 0

    def __post_init__(self):
        for name, low in (("chunk_seconds", 0.0), ("lead_seconds", None), ("temperature", 0.0),
                          ("floor", None)):
            value = getattr(self, name)
            if value is None and name == "lead_seconds":
                continue
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (
                value > low if low is not None else value >= 0)
            if not ok:
                raise ValueError(f"{name}={value!r}: expected a finite number "
                                 f"{'> 0' if low is not None else '>= 0'}")
        if self.floor >= 1:
            raise ValueError(f"floor={self.floor!r}: expected a probability below 1")
        if self.emit not in EMITS:
            raise ValueError(f"emit={self.emit!r}: expected one of {', '.join(EMITS)}")

    def frames(self, seconds: float, sample_rate: int, pool: int) -> int:
        return round(seconds * sample_rate / pool)

    def lead_frames(self, receptive_field: int, sample_rate: int, pool: int) -> int:
        """The lead-in in latent frames: as given, or the receptive field rounded up."""
        if self.lead_seconds is None:
            return math.ceil(receptive_field / pool)
        return self.frames(self.lead_seconds, sample_rate, pool)


CROSSFADE_SECONDS = 0.01
EMITS = ("sample", "mean")
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
        lead = sampling.lead_frames(decoder_receptive_field(self.config.model.decoder),
                                    self.sample_rate, pool)
        rows, latents = {}, []
        for to, clips in prepared.items():
            chunks = [self._chunk_latents(audio, chunk, lead) for audio in clips]
            rows[to] = [z.shape[0] for z in chunks]
            latents.append(torch.cat(chunks))  # (rows, L, lead + chunk)
        width = max(z.shape[0] for z in latents)
        z = torch.stack([F.pad(z, (0, 0, 0, 0, 0, width - z.shape[0])) for z in latents])
        classes = torch.arange(self.config.model.classes, device=z.device)
        levels = codes_to_audio(classes, replace(self.config.model, pre_emphasis=0.0)) \
            if sampling.emit == "mean" else None
        out = generate_stacked([self.model.decoders[to] for to in jobs], z, pool,
                               seed=sampling.seed, temperature=sampling.temperature,
                               floor=sampling.floor, levels=levels, progress=progress)
        audio = codes_to_audio(out, self.config.model) if levels is None else \
            deemphasize(out, self.config.model)  # (G, width, (lead + chunk) * pool)
        fade = min(lead * pool, chunk * pool, round(CROSSFADE_SECONDS * self.sample_rate))
        return {to: [stitch_chunks(clip, lead * pool - fade, fade)[:a.shape[-1]].cpu()
                     for clip, a in zip(per_target.split(rows[to]), prepared[to], strict=False)]
                for to, per_target in zip(jobs, audio, strict=True)}

    def _chunk_latents(self, audio: Tensor, chunk: int, lead: int) -> Tensor:
        """A prepared clip's latent cut into chunks of `chunk` frames, each with the `lead`
        frames before it (silence before the clip): (chunks, L, lead + chunk). The clip is
        encoded in windows of the training segment, as the decoders saw latents in training."""
        pool = self.config.model.encoder.pool
        n = audio.shape[-1]
        frames = math.ceil(n / pool / chunk) * chunk
        audio = F.pad(audio, (lead * pool, frames * pool - n))
        z = self.model.encode(audio.unsqueeze(0), window=self.config.data.segment_samples)[0]
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
