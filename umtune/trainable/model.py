"""The Universal Music Translation network: encoder, per-domain WaveNet decoders, confusion net.

Mor, Wolf, Polyak, Taigman, "A Universal Music Translation Network" (2018), section 3:
a shared non-causal dilated-convolution encoder E maps mu-law audio to a latent at 1/pool of the
sample rate; one autoregressive WaveNet decoder per domain predicts the next mu-law sample from
the past samples and the latent (teacher forcing in training); a small confusion network C
predicts the domain from the latent, and the encoder is trained to make it fail.

Only nn.Modules and pure tensor functions live here: no I/O, devices, Ray or loss weighting
(those are in loop.py). Incremental generation (generate.py) folds these very weights into
its own per-step layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor, nn

from umtune.config import (
    ConfusionConfig,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    dilation_schedule,
)
from umtune.trainable import layer_stack
from umtune.trainable.cross_entropy import cross_entropy
from umtune.trainable.gate import add_per_frame, gate
from umtune.trainable.rows import linear
from umtune.trainable.taps import add_tap_grads, tap_products, taps_weight, write_taps


def mu_law_encode(audio: Tensor, classes: int) -> Tensor:
    """Waveform in [-1, 1] -> integer codes in [0, classes)."""
    return AF.mu_law_encoding(audio.clamp(-1.0, 1.0), classes)


def mu_law_decode(codes: Tensor, classes: int) -> Tensor:
    return AF.mu_law_decoding(codes, classes)


def audio_to_codes(audio: Tensor, cfg: ModelConfig) -> Tensor:
    """Waveform (..., T) in [-1, 1] -> the mu-law codes the network models: pre-emphasised
    first when `cfg.pre_emphasis` > 0, so that the quantisation and sampling noise, white in
    the codes, lands under the music's spectrum once `codes_to_audio` de-emphasises it."""
    if cfg.pre_emphasis > 0:
        audio = AF.preemphasis(audio, cfg.pre_emphasis)
    return mu_law_encode(audio, cfg.classes)


def codes_to_audio(codes: Tensor, cfg: ModelConfig) -> Tensor:
    """The inverse of `audio_to_codes`: codes (..., T) -> waveform."""
    return deemphasize(mu_law_decode(codes, cfg.classes), cfg)


def deemphasize(audio: Tensor, cfg: ModelConfig) -> Tensor:
    """Undo `cfg.pre_emphasis` on a waveform (..., T) the network produced (the identity
    without it)."""
    return AF.deemphasis(audio, cfg.pre_emphasis) if cfg.pre_emphasis > 0 else audio


def codes_to_input(codes: Tensor, classes: int) -> Tensor:
    """Codes -> network input scaled to [-0.5, 0.5], as in the paper's code."""
    return codes.float() / (classes - 1) - 0.5


def encoder_input(audio: Tensor, classes: int) -> Tensor:
    """Waveform (..., T) -> the encoder's input: its plain mu-law codes, scaled. Never
    pre-emphasised: pre-emphasis shapes only what the decoders model, and a high-passed input
    would take the notes' fundamentals from the latent."""
    return codes_to_input(mu_law_encode(audio, classes), classes)


def encoder_receptive_field(cfg: EncoderConfig) -> int:
    """Samples of input that reach one pre-pooling encoder output (centred, non-causal)."""
    dil = dilation_schedule(cfg.dilations, cfg.blocks, cfg.layers_per_block)
    return (cfg.kernel_size - 1) * (1 + sum(dil)) + 1


def decoder_receptive_field(cfg: DecoderConfig) -> int:
    """Number of past samples the prediction of sample t depends on (t-R .. t-1)."""
    dil = dilation_schedule(cfg.dilations, cfg.blocks, cfg.layers_per_block)
    return (cfg.kernel_size - 1) * (1 + sum(dil)) + 1


def generation_flops_per_sample(decoder: WaveNetDecoder) -> int:
    """FLOPs (2 per multiply-add) to generate one sample: each weight of the decoder is used
    once per sample, except the conditioning projection, which runs once per latent frame."""
    per_frame = parameter_count(decoder.cond)
    return 2 * (parameter_count(decoder) - per_frame)


def conv_taps(x: Tensor, kernel_size: int, dilation: int, before: int,
              channels: int | None = None) -> Tensor:
    """(B, T, C) -> (B, T, kernel_size * C): at each t, x[t - before + i * dilation] for
    i < kernel_size side by side (zeros outside x), so that a convolution padded with `before`
    samples ahead of x (and as many after as keep T) is one matmul with `taps_weight`.
    before = (k - 1) * dilation is causal; half of it, centred. With `channels`, the taps read
    x[..., :channels] (C = channels) and the gradient flows to that slice of x."""
    channels = channels or x.shape[-1]
    if torch.compiler.is_compiling():  # inductor fuses these (and cannot generate _Taps')
        return padded_taps(x[..., :channels], kernel_size, dilation, before)
    return _Taps.apply(x, channels, kernel_size, dilation, before)


def padded_taps(x: Tensor, kernel_size: int, dilation: int, before: int) -> Tensor:
    """`conv_taps` as slices of a zero-padded copy of x (PyTorch ops, autograd's backward)."""
    T, span = x.shape[1], (kernel_size - 1) * dilation
    padded = F.pad(x, (0, 0, before, span - before)) if span else x
    return torch.cat([padded[:, i * dilation:i * dilation + T] for i in range(kernel_size)],
                     dim=-1)


class _Taps(torch.autograd.Function):
    """`conv_taps` written into one buffer, with its own backward (trainable/taps.py)."""

    @staticmethod
    def forward(ctx, x: Tensor, channels: int, kernel_size: int, dilation: int,
                before: int) -> Tensor:
        ctx.shape, ctx.taps = x.shape, (kernel_size, dilation, before)
        return write_taps(x, channels, kernel_size, dilation, before)

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = grad.new_zeros(ctx.shape)
        add_tap_grads(out, grad, *ctx.taps)
        return out, None, None, None, None


def pointwise(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """A 1x1 conv's weights applied to channels-last x (..., C)."""
    return linear(x, conv.weight[:, :, 0], conv.bias)


def conv_as_matmul(conv: nn.Conv1d, x: Tensor, causal: bool, with_bias: bool = True) -> Tensor:
    """A convolution's weights applied to the first `conv.in_channels` channels of channels-last
    x (B, T, C), T kept: causal (t sees x[<= t]) or centred (an odd kernel); without its bias
    where the caller adds it more cheaply (per latent frame)."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    span = (k - 1) * d
    before = span if causal else span // 2
    bias = conv.bias if with_bias else None
    if _by_tap_products(conv, x):
        return tap_products(x[..., :conv.in_channels], conv.weight, bias, d, before)
    return linear(conv_taps(x, k, d, before, conv.in_channels), taps_weight(conv.weight), bias)


def _by_tap_products(conv: nn.Conv1d, x: Tensor) -> bool:
    """Whether `conv_as_matmul` runs as a product per tap rather than one over written taps: in
    eager float32 on the CPU (trainable/taps.py), where the taps one product would read (k x
    in_channels a row) are no fewer than the sums k products add into (k x out_channels a row);
    a 1-channel input's taps cost less than its k outer products."""
    return (conv.in_channels >= conv.out_channels and x.dtype == torch.float32
            and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


class EncoderLayer(nn.Module):
    """ReLU -> dilated conv -> ReLU -> 1x1, added back (no normalisation, as the paper).
    Channels-last (B, T, C), as the decoder's layers."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.dilated = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C)
        h = conv_as_matmul(self.dilated, F.relu(x), causal=False)
        return x + pointwise(self.mix, F.relu(h))


def standardize_frames(z: Tensor, eps: float = 1e-5) -> Tensor:
    """Each channel of a latent (B, L, F) to zero mean and unit variance over its F frames
    (instance normalisation; a single frame becomes 0)."""
    centred = z - z.mean(dim=-1, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps)


class Encoder(nn.Module):
    """Shared non-causal encoder: waveform input -> latent (B, latent_channels, T // pool).

    Args:
        cfg: sizes, dilation schedule and pooling.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.pool = cfg.pool
        self.normalize_latent = cfg.normalize_latent
        dil = dilation_schedule(cfg.dilations, cfg.blocks, cfg.layers_per_block)
        self.start = nn.Conv1d(1, cfg.channels, cfg.kernel_size)
        self.layers = nn.Sequential(*(EncoderLayer(cfg.channels, cfg.kernel_size, d) for d in dil))
        self.to_latent = nn.Conv1d(cfg.channels, cfg.latent_channels, 1)

    def forward(self, x: Tensor, window: int | None = None) -> Tensor:  # x: (B, T) scaled input
        """The latent (B, L, T // pool). With `window`, x is encoded in consecutive windows of
        that many samples, each alone as training encodes its segments (zero padding beyond
        it; the last window padded with silence), so that a long clip's latent frames see the
        contexts they saw in training."""
        if window is not None and x.shape[-1] > window:
            B, T = x.shape
            x = F.pad(x, (0, -T % window)).reshape(-1, window)  # (B * windows, window)
            z = self(x)  # (B * windows, L, window // pool)
            return z.unflatten(0, (B, -1)).permute(0, 2, 1, 3).flatten(2)[..., :T // self.pool]
        h = self.layers(conv_as_matmul(self.start, x.unsqueeze(-1), causal=False))  # (B, T, C)
        frames = x.shape[-1] // self.pool
        z = pointwise(self.to_latent, h[:, :frames * self.pool])  # (B, frames * pool, L)
        z = z.unflatten(1, (frames, self.pool)).mean(dim=2).transpose(1, 2)  # (B, L, frames)
        return standardize_frames(z) if self.normalize_latent else z


class DecoderLayer(nn.Module):
    """Gated dilated causal conv; residual and skip outputs share one 1x1 conv.

    Runs channels-last, (B, T, C), as matmuls with the convolutions' weights: on the CPU oneDNN
    runs these sizes faster as matmuls than as convolutions (docs/speed.md).
    """

    def __init__(self, cfg: DecoderConfig, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.dilated = nn.Conv1d(cfg.residual_channels, cfg.gate_channels, cfg.kernel_size,
                                 dilation=dilation)
        self.res_skip = nn.Conv1d(cfg.gate_channels // 2, cfg.residual_channels + cfg.skip_channels,
                                  1)

    def forward(self, sums: Tensor, cond: Tensor) -> Tensor:
        """sums (B, T, R + S): the residual stream and the skip sum; cond (B, F, G): the
        conditioning of each latent frame, the dilated conv's bias included (added per frame by
        `WaveNetDecoder.project_condition`, not per sample). Returns sums plus this layer's
        residual and skip."""
        h = conv_as_matmul(self.dilated, sums, causal=True,  # reads the residual channels
                           with_bias=False)  # its bias is in cond
        return sums + pointwise(self.res_skip, gate(h, cond))


class WaveNetDecoder(nn.Module):
    """Autoregressive WaveNet for one domain, conditioned on the (upsampled) latent.

    The latent is upsampled by nearest repetition (the official code's choice). Since a 1x1
    conv commutes with repetition, every layer's conditioning is projected at the latent rate
    in one matmul and broadcast over each frame's `pool` samples: the same function as
    projecting the repeated latent, at 1/pool of the cost.

    Args:
        cfg: decoder sizes and dilation schedule.
        latent_channels: channels of the encoder's latent.
        classes: mu-law classes predicted per sample.
    """

    def __init__(self, cfg: DecoderConfig, latent_channels: int, classes: int):
        super().__init__()
        self.classes = classes
        self.kernel_size = cfg.kernel_size
        self.gate_channels = cfg.gate_channels
        dil = dilation_schedule(cfg.dilations, cfg.blocks, cfg.layers_per_block)
        self.start = nn.Conv1d(1, cfg.residual_channels, cfg.kernel_size)
        self.start_skip = nn.Conv1d(cfg.residual_channels, cfg.skip_channels, 1)
        self.layers = nn.ModuleList(DecoderLayer(cfg, d) for d in dil)
        self.cond = nn.Conv1d(latent_channels, cfg.gate_channels * len(dil) + cfg.skip_channels, 1)
        self.head_hidden = nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1)
        self.head_out = nn.Conv1d(cfg.skip_channels, classes, 1)

    def project_condition(self, z: Tensor) -> list[Tensor]:
        """Latent (B, L, F) -> per-layer conditioning (B, F, G) each, then the head's (B, F, S),
        each with the bias of the layer it conditions: added here once per frame, the biases
        cost nothing per sample (a matmul's bias is a pass over its whole output)."""
        c = pointwise(self.cond, z.transpose(1, 2))  # (B, F, G * layers + S)
        biases = [layer.dilated.bias for layer in self.layers] + [self.head_hidden.bias]
        c = (c + torch.cat(biases)).to(c.dtype)
        return list(c.split([b.numel() for b in biases], dim=-1))

    def head(self, skip: Tensor, cond: Tensor) -> Tensor:
        """Skip sum (B, T, S) and the head's conditioning (B, F, S), head_hidden's bias
        included -> logits (B, T, classes)."""
        hidden = add_per_frame(linear(F.relu(skip), self.head_hidden.weight[:, :, 0]), cond)
        return pointwise(self.head_out, F.relu(hidden))

    def forward(self, codes: Tensor, z: Tensor, inputs: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, classes, T): position t predicts codes[:, t] from codes[:, <t].

        Args:
            codes: (B, T) target mu-law codes; T must equal z's frames x pool.
            z: (B, L, F) latent.
            inputs: (B, T) what the decoder sees of the past samples, in input units; default
                the codes themselves (training may pass them changed: noise, drift, silenced
                spans or the decoder's own draws, `train.decoder_*`).
        """
        frames = z.shape[-1]
        assert codes.shape[1] % frames == 0, f"{codes.shape[1]} samples vs {frames} latent frames"
        inputs = codes_to_input(codes, self.classes) if inputs is None else inputs
        x = F.pad(inputs, (1, -1)).unsqueeze(-1)  # (B, T, 1), shifted right
        x = conv_as_matmul(self.start, x, causal=True)  # (B, T, R)
        sums = torch.cat([x, pointwise(self.start_skip, x)], dim=-1)  # (B, T, R + S)
        conds = self.project_condition(z)
        if layer_stack.applies(sums, self.gate_channels):
            skip = layer_stack.layer_stack(self.layers, sums, conds[:-1])
        else:
            for layer, cond in zip(self.layers, conds, strict=False):
                sums = layer(sums, cond)
            skip = sums[..., x.shape[-1]:]
        return self.head(skip, conds[-1]).transpose(1, 2)


class ConfusionNet(nn.Module):
    """Domain classifier on the latent: dropout, 1x1 convs with ELU, K logits averaged over time.

    Args:
        cfg: layers, channels, dropout.
        latent_channels: input channels.
        domains: number of domains K.
    """

    def __init__(self, cfg: ConfusionConfig, latent_channels: int, domains: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
        for i in range(cfg.layers):
            layers += [nn.Conv1d(latent_channels if i == 0 else cfg.channels, cfg.channels, 1),
                       nn.ELU()]
        layers.append(nn.Conv1d(cfg.channels, domains, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:  # (B, L, F) -> (B, K)
        return self.net(z).mean(dim=-1)


class Autoencoder(nn.Module):
    """Shared encoder + one decoder per domain: the part trained to reconstruct.

    Its forward takes a domain-major batch (rows [k*b, (k+1)*b) belong to domain k, every
    domain present) so that one call uses every parameter, which DistributedDataParallel needs.

    Args:
        cfg: the model config; `cfg.domains` names the decoders (an nn.ModuleDict).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.classes = cfg.classes
        self.encoder = Encoder(cfg.encoder)
        self.decoders = nn.ModuleDict({
            d: WaveNetDecoder(cfg.decoder, cfg.encoder.latent_channels, cfg.classes)
            for d in cfg.domains})
        # Predicts the input's chroma from each latent frame (trainable/content.py).
        self.content = nn.Conv1d(cfg.encoder.latent_channels, 12, 1) if cfg.content_head \
            else None

    def forward(self, inputs: Tensor, targets: Tensor, decoder_inputs: Tensor | None = None,
                ) -> tuple[Tensor, Tensor]:
        """Reconstruction cross-entropy per domain (K,) in nats/sample, and the latent.

        Args:
            inputs: (K * b, T) encoder input in [-0.5, 0.5] (possibly augmented audio).
            targets: (K * b, T) clean mu-law codes the decoders must predict.
            decoder_inputs: (K * b, T) the decoders' teacher-forced input (default: the targets
                in input units).
        """
        z = self.encoder(inputs)  # (K*b, L, F)
        return self.reconstruction_ce(z, targets, decoder_inputs), z

    def reconstruction_ce(self, z: Tensor, targets: Tensor, decoder_inputs: Tensor | None = None,
                          ) -> Tensor:
        """Per-domain CE (K,) of each domain's decoder on its rows of `targets` given latent z."""
        k = len(self.decoders)
        return self.sample_ce(z, targets, decoder_inputs).unflatten(0, (k, -1)).mean(dim=(1, 2))

    def sample_ce(self, z: Tensor, targets: Tensor, decoder_inputs: Tensor | None = None,
                  ) -> Tensor:
        """CE of every sample (K * b, T): each domain's decoder on its rows of `targets`."""
        # The logits are a (B, classes, T) view of channels-last (B, T, classes): back to rows.
        return torch.cat([cross_entropy(logits.transpose(1, 2).flatten(0, 1),
                                        codes.flatten()).view_as(codes)
                          for logits, codes in self.teacher_forced(z, targets, decoder_inputs)])

    @torch.no_grad()
    def one_step_draws(self, z: Tensor, targets: Tensor, decoder_inputs: Tensor | None = None,
                       ) -> Tensor:
        """Codes (K * b, T): at every position a sample of its domain's decoder given the
        teacher-forced past, each drawn alone (no draw sees another: one pass for all)."""
        draws = []
        for logits, _ in self.teacher_forced(z, targets, decoder_inputs):
            gumbel = -torch.empty(logits.shape, device=logits.device).exponential_().log()
            draws.append((logits.float() + gumbel).argmax(1))  # Gumbel-max: softmax sampling
        return torch.cat(draws)

    def teacher_forced(self, z: Tensor, targets: Tensor, decoder_inputs: Tensor | None = None,
                       ) -> Iterator[tuple[Tensor, Tensor]]:
        """(logits (b, classes, T), codes (b, T)) of each domain's decoder on its rows."""
        k = len(self.decoders)
        if decoder_inputs is None:
            decoder_inputs = codes_to_input(targets, self.classes)
        for decoder, codes, latent, inputs in zip(self.decoders.values(), targets.chunk(k),
                                                  z.chunk(k), decoder_inputs.chunk(k),
                                                  strict=True):
            yield decoder(codes, latent, inputs), codes


class UniversalTranslator(nn.Module):
    """The whole network: `autoencoder` (encoder + decoders) and the `confusion` net.

    Args:
        cfg: the whole model config.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.autoencoder = Autoencoder(cfg)
        self.confusion = ConfusionNet(cfg.confusion, cfg.encoder.latent_channels, len(cfg.domains))

    @property
    def encoder(self) -> Encoder:
        return self.autoencoder.encoder

    @property
    def decoders(self) -> nn.ModuleDict:
        return self.autoencoder.decoders

    def encode(self, audio: Tensor, window: int | None = None) -> Tensor:
        """Waveform (B, T) in [-1, 1] -> latent (B, L, T // pool); `window`: see `Encoder`."""
        return self.encoder(encoder_input(audio, self.cfg.classes), window)


def swapped_latent(z: Tensor, domains: int) -> Tensor:
    """The latent (K * b, L, F) of a domain-major batch with each row's latent swapped for that
    of the next clip of the same domain (rows k*b .. k*b+b-1 rotate by one; b >= 2).

    A decoder's CE with it minus its CE with the clip's own latent (the latent gain, in
    nats/sample) says how much the decoder uses the latent: the same domain and statistics,
    other notes. Near 0, the decoder is an unconditional model of its domain and cannot carry
    content across. (Rolling frames within a clip understates this: a short clip mostly holds
    one chord.)
    """
    per_domain = z.unflatten(0, (domains, -1))
    if per_domain.shape[1] < 2:
        raise ValueError(f"swapped_latent needs at least 2 clips per domain, got "
                         f"{per_domain.shape[1]}")
    return per_domain.roll(1, dims=1).flatten(0, 1)


@dataclass(frozen=True)
class LatentUse:
    """Per-domain teacher-forced CE (K,) in nats/sample with each clip's own latent and the
    latent gain (CE with `swapped_latent` minus it), over whole segments and over their first
    `cold_samples` (the decoder's past there is silence: where generation starts)."""

    ce: Tensor
    gain: Tensor
    ce_cold: Tensor
    gain_cold: Tensor


def latent_use(autoencoder: Autoencoder, z: Tensor, targets: Tensor,
               cold_samples: int) -> LatentUse:
    """Measure `LatentUse` on a domain-major batch: latent (K*b, L, F), target codes (K*b, T)."""
    k = len(autoencoder.decoders)
    own = autoencoder.sample_ce(z, targets).unflatten(0, (k, -1))  # (K, b, T)
    other = autoencoder.sample_ce(swapped_latent(z, k), targets).unflatten(0, (k, -1))
    cold = slice(0, max(1, min(cold_samples, targets.shape[-1])))
    return LatentUse(ce=own.mean(dim=(1, 2)), gain=(other - own).mean(dim=(1, 2)),
                     ce_cold=own[..., cold].mean(dim=(1, 2)),
                     gain_cold=(other - own)[..., cold].mean(dim=(1, 2)))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
