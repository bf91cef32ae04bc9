"""The network's modules: shapes, causality, receptive fields, the adversarial loss sign."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from umtune.config import (
    ConfusionConfig,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    dilation_schedule,
    paper,
)
from umtune.trainable.model import (
    DecoderLayer,
    UniversalTranslator,
    WaveNetDecoder,
    audio_to_codes,
    codes_to_audio,
    codes_to_input,
    conv_as_matmul,
    conv_taps,
    decoder_receptive_field,
    encoder_receptive_field,
    latent_use,
    mu_law_encode,
    padded_taps,
    standardize_frames,
    swapped_latent,
)
from umtune.trainable.rows import linear
from umtune.trainable.taps import tap_products, taps_weight

TINY = ModelConfig(
    domains=("a", "b"),
    encoder=EncoderConfig(blocks=2, layers_per_block=2, channels=8, latent_channels=4, pool=20),
    decoder=DecoderConfig(blocks=2, layers_per_block=3, residual_channels=8, gate_channels=16,
                          skip_channels=8),
    confusion=ConfusionConfig(layers=2, channels=8, dropout=0.0),
)


def _model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return UniversalTranslator(cfg)


def test_shapes_of_latent_logits_and_confusion():
    """Encoder pools by `pool`, decoders give (B, 256, T), confusion gives (B, K)."""
    m = _model()
    audio = torch.rand(3, 200) * 2 - 1
    z = m.encode(audio)
    assert z.shape == (3, 4, 10)
    logits = m.decoders["a"](mu_law_encode(audio, 256), z)
    assert logits.shape == (3, 256, 200)
    assert m.confusion(z).shape == (3, 2)


@pytest.mark.parametrize("dilations", ["doubling", "base3", (1, 1, 2, 3, 5, 8)])
def test_decoder_is_causal_with_the_stated_receptive_field(dilations):
    """Output t depends on exactly codes t-R .. t-1: never on t itself or the future."""
    cfg = replace(TINY, decoder=replace(TINY.decoder, dilations=dilations))
    m = _model(cfg)
    codes = torch.randint(0, 256, (1, 400))
    z = torch.randn(1, 4, 20)
    base = m.decoders["a"](codes, z)
    t0 = 150
    changed = codes.clone()
    changed[0, t0] = (changed[0, t0] + 97) % 256
    diff = (m.decoders["a"](changed, z) - base).abs().amax(dim=(0, 1))
    affected = (diff > 0).nonzero().flatten()
    receptive = decoder_receptive_field(cfg.decoder)
    assert affected.min().item() == t0 + 1
    assert affected.max().item() == t0 + receptive
    dil = dilation_schedule(dilations, 2, 3)
    assert receptive == 1 + 1 + sum(dil)  # kernel 2: start conv + one tap per layer + shift


def test_decoder_causality_by_gradient():
    """Logits at t get zero gradient from inputs after t (checked on the scaled input)."""
    m = _model()
    dec = m.decoders["b"]
    x = torch.randn(1, 200, requires_grad=True)
    z = torch.randn(1, 4, 10)
    dec(torch.zeros(1, 200, dtype=torch.long), z, x)[0, :, 100].sum().backward()
    assert x.grad[0, 100:].abs().max() == 0
    assert x.grad[0, :100].abs().max() > 0


@pytest.mark.parametrize("in_channels, out_channels", [(6, 10), (10, 6)])  # taps; per tap
@pytest.mark.parametrize("kernel_size, dilation", [(1, 1), (2, 4), (3, 5)])
def test_matmul_layout_computes_the_convolutions(kernel_size, dilation, in_channels,
                                                 out_channels):
    """Channels-last matmuls with a Conv1d's weights give that convolution's output, centred and
    causal, so that weights mean the same in either layout (checkpoints, generation): one
    product over the taps, or (float32, no fewer channels in than out) a product per tap."""
    torch.manual_seed(0)
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
    x = torch.randn(2, 50, in_channels)  # (B, T, C)
    span = (kernel_size - 1) * dilation
    causal = F.conv1d(F.pad(x.transpose(1, 2), (span, 0)), conv.weight, conv.bias,
                      dilation=dilation)
    torch.testing.assert_close(conv_as_matmul(conv, x, causal=True), causal.transpose(1, 2))
    if kernel_size % 2:
        centred = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, dilation=dilation,
                           padding=span // 2)
        torch.testing.assert_close(conv_as_matmul(conv, x, causal=False), centred.transpose(1, 2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel_size, dilation, before",
                         [(1, 1, 0), (2, 4, 4), (2, 64, 64), (3, 5, 5), (3, 30, 30), (2, 3, 1)])
def test_taps_and_their_gradient_are_the_padded_slices(kernel_size, dilation, before, dtype):
    """`conv_taps` (its own writes and backward: kernels.c for float32 and bf16) against the
    slices of a zero-padded copy under autograd: the same values and gradient of x (channel
    slice included, taps past the segment included); bf16's gradient sums each row's taps
    in float32 and rounds once."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 7).to(dtype).requires_grad_()
    grad = torch.randn(2, 40, kernel_size * 5).to(dtype)
    got = conv_taps(x, kernel_size, dilation, before, channels=5)
    expected = padded_taps(x[..., :5], kernel_size, dilation, before)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    got_grad, = torch.autograd.grad(got, x, grad)
    expected_grad, = torch.autograd.grad(expected, x, grad)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got_grad, expected_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kernel_size, dilation, before",
                         [(1, 1, 0), (2, 4, 4), (3, 5, 5), (3, 30, 30), (2, 3, 1), (3, 64, 64)])
def test_tap_products_and_their_gradients_are_the_product_over_the_taps(
        kernel_size, dilation, before, dtype, with_bias):
    """`tap_products` (a product per tap accumulated in place, its own backward) against one
    product over the padded taps under autograd: the same output and gradients of x (channel
    slice included, taps past the segment included), the weight and the bias."""
    torch.manual_seed(0)
    x = torch.randn(2, 40, 7, dtype=dtype, requires_grad=True)
    weight = torch.randn(6, 5, kernel_size, dtype=dtype, requires_grad=True)
    bias = torch.randn(6, dtype=dtype, requires_grad=True) if with_bias else None
    grad = torch.randn(2, 40, 6, dtype=dtype)
    got = tap_products(x[..., :5], weight, bias, dilation, before)
    expected = padded_taps(x[..., :5], kernel_size, dilation, before) @ taps_weight(weight).t()
    expected = expected + bias if with_bias else expected
    torch.testing.assert_close(got, expected)
    inputs = (x, weight, bias) if with_bias else (x, weight)
    for got_grad, expected_grad in zip(torch.autograd.grad(got, inputs, grad),
                                       torch.autograd.grad(expected, inputs, grad), strict=True):
        torch.testing.assert_close(got_grad, expected_grad)


@pytest.mark.parametrize("shape", [(3, 10, 6), (1, 7, 6), (5, 6)])
def test_linear_on_chunks_of_rows_is_f_linear(shape):
    """`linear` (one batched matmul over a chunk of rows per thread where the rows divide)
    gives F.linear's output and gradients, in float64."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
        grad = torch.randn(*shape[:-1], 4, dtype=torch.float64)
        for b in (bias, None):
            inputs = [x, weight] + ([b] if b is not None else [])
            got, expected = linear(x, weight, b), F.linear(x, weight, b)
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
            for g, e in zip(torch.autograd.grad(got, inputs, grad),
                            torch.autograd.grad(expected, inputs, grad), strict=True):
                torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("kernel_size, dilation", [(2, 4), (3, 5), (2, 64), (3, 30)])
def test_decoder_layer_and_its_gradients_are_the_papers_layer_of_convolutions(kernel_size,
                                                                             dilation):
    """`DecoderLayer` (channels-last matmuls, the conditioning and the dilated conv's bias added
    per frame) against the paper's layer written with (B, C, T) convolutions, in float64: the
    output and the gradients of the stream, the conditioning and every weight agree (taps past
    the segment included)."""
    cfg = DecoderConfig(residual_channels=6, gate_channels=10, skip_channels=4,
                        kernel_size=kernel_size)
    torch.manual_seed(0)
    layer = DecoderLayer(cfg, dilation).double()
    sums = torch.randn(2, 40, 10, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 4, 10, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 40, 10, dtype=torch.float64)

    def paper_layer():
        x = F.pad(sums[..., :6].transpose(1, 2), ((kernel_size - 1) * dilation, 0))
        h = F.conv1d(x, layer.dilated.weight, layer.dilated.bias, dilation=dilation)
        a, b = (h + cond.repeat_interleave(10, dim=1).transpose(1, 2)).chunk(2, dim=1)
        out = F.conv1d(torch.tanh(a) * torch.sigmoid(b), layer.res_skip.weight,
                       layer.res_skip.bias)
        return sums + out.transpose(1, 2)

    results = []
    for forward in (paper_layer, lambda: layer(sums, cond + layer.dilated.bias)):
        out = forward()
        results.append([out, *torch.autograd.grad(out, [sums, cond, *layer.parameters()],
                                                  grad)])
    for expected, got in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_encoder_receptive_field_is_centred():
    """A pre-pooling encoder output sees (RF-1)/2 samples on each side, no more."""
    cfg = replace(TINY.encoder, pool=1)
    torch.manual_seed(0)
    enc = UniversalTranslator(replace(TINY, encoder=cfg)).encoder
    x = torch.zeros(1, 300, requires_grad=True)
    enc(x)[0, :, 150].sum().backward()
    seen = (x.grad[0] != 0).nonzero().flatten()
    half = (encoder_receptive_field(cfg) - 1) // 2
    assert seen.min().item() == 150 - half and seen.max().item() == 150 + half


def test_paper_preset_sizes_and_receptive_field():
    """The paper preset: 3x10 encoder, 4x14 decoders, latent 64, pool 800, RF ~65k samples."""
    cfg = paper().model
    assert cfg.encoder.blocks * cfg.encoder.layers_per_block == 30
    assert cfg.decoder.blocks * cfg.decoder.layers_per_block == 56
    assert cfg.encoder.latent_channels == 64 and cfg.encoder.pool == 800
    assert decoder_receptive_field(cfg.decoder) == 4 * (2**14 - 1) + 2


def test_adversarial_term_pushes_the_encoder_to_raise_confusion_ce():
    """With lambda > 0, a step on CE - lambda*CE_conf increases the confusion net's CE."""
    m = _model()
    audio = torch.rand(4, 200) * 2 - 1
    labels = torch.tensor([0, 0, 1, 1])
    codes = mu_law_encode(audio, 256)
    inputs = codes_to_input(codes, 256)

    def confusion_ce():
        return F.cross_entropy(m.confusion(m.autoencoder.encoder(inputs)), labels)

    before = confusion_ce().item()
    opt = torch.optim.SGD(m.autoencoder.encoder.parameters(), lr=0.5)
    loss = -1.0 * confusion_ce()  # the adversarial part of the autoencoder's loss, lambda = 1
    loss.backward()
    opt.step()
    assert confusion_ce().item() > before


def test_tiny_model_overfits_a_one_second_clip():
    """A tiny autoencoder learns one 1 s clip: its CE falls below half of log(256)."""
    torch.manual_seed(0)
    t = torch.arange(16000) / 16000
    clip = (0.5 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 1.5 * t))
    codes = mu_law_encode(clip, 256).view(4, 4000)
    inputs = codes_to_input(codes, 256)
    cfg = replace(TINY, encoder=replace(TINY.encoder, pool=200),
                  decoder=replace(TINY.decoder, residual_channels=32, gate_channels=64,
                                  skip_channels=32))
    m = _model(cfg)
    opt = torch.optim.Adam(m.autoencoder.parameters(), lr=3e-3)
    for _ in range(150):
        ce, _ = m.autoencoder(inputs, codes)
        opt.zero_grad()
        ce.mean().backward()
        opt.step()
    assert ce.mean().item() < 0.5 * torch.log(torch.tensor(256.0)).item()  # 5.55 at the start


def test_standardized_latent_has_zero_mean_unit_variance_per_clip_and_channel():
    """With `normalize_latent` every channel of every clip's latent is standardised over the
    clip's frames (a per-clip offset, where the domain sits, is gone); one frame gives 0."""
    cfg = replace(TINY, encoder=replace(TINY.encoder, normalize_latent=True))
    audio = torch.randn(3, 200) * 0.3
    z = _model(cfg).encode(audio)
    assert z.shape == (3, 4, 10)
    torch.testing.assert_close(z.mean(-1), torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z, F.instance_norm(_model(TINY).encode(audio)), atol=1e-4, rtol=0)
    offset = torch.randn(3, 4, 1) * 10
    wide = standardize_frames(torch.randn(3, 4, 50) + offset)
    torch.testing.assert_close(wide.var(-1, correction=0), torch.ones(3, 4), atol=1e-4, rtol=0)
    assert torch.equal(standardize_frames(torch.randn(2, 4, 1)), torch.zeros(2, 4, 1))
    assert _model(cfg).encode(audio[:, :20]).abs().max() == 0  # one frame


def test_swapped_latent_gives_each_clip_the_latent_of_the_next_clip_of_its_domain():
    """Rows are grouped by domain (K = 2, b = 3): each row gets its neighbour's latent within
    its own domain, never another domain's; one clip per domain cannot be swapped."""
    z = torch.arange(6, dtype=torch.float32).view(6, 1, 1).expand(6, 2, 3)
    swapped = swapped_latent(z, domains=2)
    assert swapped[:, 0, 0].tolist() == [2, 0, 1, 5, 3, 4]
    with pytest.raises(ValueError, match="2 clips per domain"):
        swapped_latent(z[:2], domains=2)


def _trained_on_its_latent(targets, z, classes):
    """A decoder trained where the latent alone says what each sample is."""
    decoder = WaveNetDecoder(TINY.decoder, latent_channels=classes, classes=classes)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.cross_entropy(decoder(targets, z), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return decoder


def test_latent_gain_is_zero_for_a_decoder_deaf_to_the_latent_and_large_once_it_listens():
    """Where the latent alone says what each sample is (a one-hot class per sample), a decoder
    trained on it loses more than a nat/sample to another clip's latent, at cold starts too;
    with its conditioning weights zeroed it loses exactly nothing."""
    torch.manual_seed(0)
    classes = 4
    targets = torch.randint(classes, (8, 64))
    z = F.one_hot(targets, classes).float().transpose(1, 2)  # (B, L=classes, F=T): pool 1
    cfg = replace(TINY, domains=("only", "other"), classes=classes,
                  encoder=replace(TINY.encoder, latent_channels=classes, pool=1))
    model = _model(cfg).autoencoder
    model.decoders["only"] = model.decoders["other"] = _trained_on_its_latent(targets, z,
                                                                              classes)
    with torch.no_grad():
        use = latent_use(model, torch.cat([z, z]), torch.cat([targets, targets]),
                         cold_samples=16)
        assert use.gain.min() > 1.0 and use.gain_cold.min() > 1.0
        assert use.ce_cold.shape == use.ce.shape == (2,)
        model.decoders["only"].cond.weight.zero_()
        use = latent_use(model, torch.cat([z, z]), torch.cat([targets, targets]),
                         cold_samples=16)
    assert use.gain.min() == 0.0 and use.gain_cold.min() == 0.0


def test_cold_start_figures_cover_the_first_receptive_field_only():
    """The cold CE is the mean per-sample CE over the first `cold_samples` of each segment."""
    m = _model().eval()
    codes = mu_law_encode(torch.rand(4, 200) - 0.5, 256)
    with torch.no_grad():
        z = m.encoder(codes_to_input(codes, 256))
        use = latent_use(m.autoencoder, z, codes, cold_samples=30)
        per_sample = m.autoencoder.sample_ce(z, codes).view(2, 2, 200)
    torch.testing.assert_close(use.ce_cold, per_sample[..., :30].mean(dim=(1, 2)))
    torch.testing.assert_close(use.ce, per_sample.mean(dim=(1, 2)))


def test_dilation_schedule_rejects_wrong_lengths_and_names():
    """Explicit lists must have blocks*layers entries; unknown names are refused by name."""
    with pytest.raises(ValueError, match="dilations"):
        dilation_schedule((1, 2), 2, 3)
    with pytest.raises(ValueError, match="fibonacci"):
        dilation_schedule("fibonacci", 2, 3)
    assert dilation_schedule("cycle2", 1, 5) == (1, 2, 1, 2, 1)


def test_decoder_sees_the_inputs_it_is_given_and_predicts_the_codes():
    """`inputs` replaces what the decoder sees of the past (its default: the codes themselves);
    the first position sees no past, so noise cannot change it."""
    m = _model(TINY)
    codes = mu_law_encode(torch.sin(torch.arange(400) * 0.05).view(2, 200) * 0.5, 256)
    z = torch.randn(2, TINY.encoder.latent_channels, 200 // TINY.encoder.pool)
    decoder = m.decoders[TINY.domains[0]]
    clean = decoder(codes, z)
    torch.testing.assert_close(decoder(codes, z, codes_to_input(codes, 256)), clean)
    noisy = decoder(codes, z, codes_to_input(codes, 256) + 0.1 * torch.randn(2, 200))
    assert torch.equal(noisy[..., 0], clean[..., 0])
    assert (noisy[..., 1:] - clean[..., 1:]).abs().amax() > 1e-3


def test_windowed_encoding_encodes_each_window_alone_and_pads_the_last_with_silence():
    """Encoder(x, window=W) is each W-sample window encoded on its own (the last one padded
    with zeros), as training encodes its segments; whole-clip encoding differs."""
    encoder = _model().encoder.eval()
    W = 3 * TINY.encoder.pool
    x = torch.rand(2, 7 * TINY.encoder.pool) - 0.5  # two windows and a third of one
    with torch.no_grad():
        z = encoder(x, window=W)
        parts = [encoder(x[:, :W]), encoder(x[:, W:2 * W]),
                 encoder(F.pad(x[:, 2 * W:], (0, 2 * TINY.encoder.pool)))[..., :1]]
        torch.testing.assert_close(z, torch.cat(parts, dim=-1))
        assert not torch.allclose(z, encoder(x))
        torch.testing.assert_close(encoder(x[:, :W], window=W), encoder(x[:, :W]))


def test_pre_emphasis_shapes_the_code_noise_under_the_music_and_decodes_back():
    """With model.pre_emphasis the codes decode back to the audio (within mu-law's step), and
    a one-step error in every code comes out of `codes_to_audio` with less energy above 2 kHz
    than below, where without it the error is white."""
    t = torch.arange(16000) / 16000
    audio = 0.5 * torch.sin(2 * torch.pi * 440 * t)[None]
    emphasised = replace(TINY, pre_emphasis=0.85)
    codes = audio_to_codes(audio, emphasised)
    assert not torch.equal(codes, mu_law_encode(audio, TINY.classes))
    assert (codes_to_audio(codes, emphasised) - audio).abs().max() < 0.05
    noise = torch.randint(0, 2, codes.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def high_over_low(cfg):
        error = codes_to_audio((codes + noise).clamp(0, 255), cfg) - codes_to_audio(codes, cfg)
        power = torch.fft.rfft(error[0]).abs().square()
        return power[4000:].mean() / power[:4000].mean()  # above / below 2 kHz

    assert high_over_low(emphasised) < 0.3 < high_over_low(TINY)
