"""Cached generation equals the naive full recompute, stacked decoders equal each decoder alone,
the cache wraps and resets correctly, and chunks are entered through a lead-in and crossfaded."""

from dataclasses import replace

import pytest
import torch
from test_fused import FUSED, needs_compiler
from test_model import TINY, _model

from umtune.config import DataConfig, RunConfig
from umtune.trainable.generate import (
    DecoderCache,
    DecoderStack,
    PastInputs,
    Sampling,
    Translator,
    cached_logits,
    decoder_step,
    fused_logits,
    generate,
    generate_stacked,
    naive_logits,
    stitch_chunks,
)
from umtune.trainable.model import decoder_receptive_field

POOL = TINY.encoder.pool


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("step", [cached_logits, pytest.param(fused_logits,
                                                                marks=needs_compiler)],
                         ids=["torch", "fused"])
def test_cached_logits_equal_full_recompute_at_every_step(step, kernel_size):
    """At every step, beyond the receptive field and the ring buffers' wrap, |diff| <= 1e-4, for
    two decoders stepped together on latents of their own, with dilated convs of 2 and 3 taps,
    through PyTorch's step and the compiled one."""
    cfg = replace(TINY, decoder=replace(TINY.decoder, kernel_size=kernel_size))
    m = _model(cfg).eval()
    stack = DecoderStack([m.decoders["a"], m.decoders["b"]])
    steps = 3 * decoder_receptive_field(cfg.decoder) + 7
    frames = -(-steps // POOL)
    z = torch.randn(2, 2, 4, frames)
    codes = torch.randint(0, 256, (2, 2, frames * POOL))
    cached, naive = step(stack, z, POOL), naive_logits(stack, z, POOL)
    worst = max((cached(t, codes) - naive(t, codes)).abs().max().item() for t in range(steps))
    assert worst <= 1e-4


@pytest.mark.parametrize("backend", ["torch", FUSED])
def test_cached_and_naive_generation_sample_the_same_audio(backend):
    """With one seed, cached generation (either step) and naive generation produce identical
    codes, over more than one block of noise."""
    m = _model().eval()
    z = torch.randn(3, 4, 15)
    cached = generate(m.decoders["b"], z, POOL, seed=11, backend=backend)
    naive = generate(m.decoders["b"], z, POOL, seed=11, backend="naive")
    assert torch.equal(cached, naive)
    assert cached.shape == (3, 15 * POOL)


@pytest.mark.parametrize("backend", ["torch", FUSED])
def test_stacked_decoders_generate_what_each_generates_alone(backend):
    """Greedy samples of two decoders stepped together equal each decoder's own."""
    m = _model().eval()
    z = torch.randn(2, 3, 4, 3)
    together = generate_stacked([m.decoders["a"], m.decoders["b"]], z, POOL, temperature=1e-9,
                                backend=backend)
    alone = [generate(m.decoders[d], z[g], POOL, temperature=1e-9, backend=backend)
             for g, d in enumerate("ab")]
    assert torch.equal(together, torch.stack(alone))


def test_low_temperature_samples_the_greedy_path_and_bad_temperatures_are_refused():
    """Near 0 every sample is its distribution's argmax, whatever the seed; at 1 the seed
    matters."""
    m = _model().eval()
    dec, z = m.decoders["a"], torch.randn(2, 4, 2)
    cold = [generate(dec, z, POOL, seed=s, temperature=1e-9) for s in (1, 2)]
    assert torch.equal(cold[0], cold[1])
    logits = cached_logits(DecoderStack([dec]), z[None], POOL)  # the generator's own path
    greedy = torch.stack([logits(t, cold[0][None])[0].argmax(-1) for t in range(2 * POOL)], 1)
    assert torch.equal(cold[0], greedy)
    assert not torch.equal(generate(dec, z, POOL, seed=1), generate(dec, z, POOL, seed=2))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            generate(dec, z, POOL, temperature=bad)


def test_cache_reset_restarts_from_silence():
    """After reset, the same inputs give the same logits as a fresh cache."""
    m = _model().eval()
    stack = DecoderStack([m.decoders["a"]])
    frame = stack.condition(torch.randn(1, 1, 4, 2)).frame(0)
    cache = DecoderCache(stack, 1)
    first = [decoder_step(stack, torch.full((1, 1), v), frame, cache) for v in (0.0, 0.1, -0.2)]
    cache.reset()
    again = [decoder_step(stack, torch.full((1, 1), v), frame, cache) for v in (0.0, 0.1, -0.2)]
    assert cache.steps == 3
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_past_inputs_are_read_from_the_right_lags_after_wrapping():
    """With 3 taps, a layer of dilation d reads its inputs from 2d and d steps ago (0 before the
    start), for every t well past its 2d slots, each layer from its own slots."""
    dilations = (3, 1, 4)
    past = PastInputs(dilations, kernel_size=3, rows=2, channels=1)
    for t in range(30):
        slots = past.slots(t)
        seen = past.read(slots)  # (layers, 2, rows, 1)
        for layer, d in enumerate(dilations):
            expected = [[max(t - lag + 1, 0) * (layer + 1)] * 2 for lag in (2 * d, d)]
            assert seen[layer, :, :, 0].tolist() == expected
        step_inputs = torch.tensor([float(t + 1) * (layer + 1) for layer in range(3)])
        past.write(slots, step_inputs[:, None, None].expand(3, 2, 1))


def test_stitched_chunks_that_agree_on_their_overlap_give_back_the_signal():
    """Chunks cut with a lead-in from one signal (the first lead before it) stitch back into
    exactly that signal; without a lead-in they are simply concatenated."""
    signal = torch.randn(4 * 50)
    drop, fade, c = 7, 5, 50
    padded = torch.cat([torch.zeros(drop + fade), signal])
    chunks = padded.unfold(0, drop + fade + c, c)  # (4, drop + fade + c)
    torch.testing.assert_close(stitch_chunks(chunks, drop, fade), signal)
    torch.testing.assert_close(stitch_chunks(signal.view(4, c), 0, 0), signal)


def test_each_chunk_is_entered_through_the_latent_of_the_audio_before_it():
    """Chunk i's lead-in frames are the last frames of chunk i - 1 (silence before the first)."""
    m = _model().eval()
    translator = Translator(model=m, config=RunConfig(model=TINY))
    z = translator._chunk_latents(torch.rand(7 * POOL) - 0.5, chunk=3, lead=2)
    assert z.shape == (3, 4, 5)
    for i in (1, 2):
        torch.testing.assert_close(z[i, :, :2], z[i - 1, :, 3:5])
    silence = m.encode(torch.zeros(1, 2 * POOL))[0]
    torch.testing.assert_close(z[0, :, :1], silence[:, :1], atol=1e-6, rtol=0)


def test_sampling_options_are_checked_by_name():
    for field, bad in (("chunk_seconds", 0.0), ("chunk_seconds", float("nan")),
                       ("lead_seconds", -0.1), ("lead_seconds", float("inf")),
                       ("temperature", 0.0)):
        with pytest.raises(ValueError, match=field):
            Sampling(**{field: bad})


@pytest.mark.parametrize("backend", ["torch", FUSED])
def test_a_probability_floor_never_samples_an_unlikely_class(backend):
    """With floor 0.02 every sampled code had at least that probability (or was the most likely
    one), by the decoder's own teacher-forced logits of the generated audio; without the floor
    the same seed draws such codes, and both steps sample the same codes."""
    m = _model().eval()
    decoder, z = m.decoders["a"], torch.randn(2, 4, 6)

    def worst_probability(codes):
        with torch.no_grad():
            probs = decoder(codes, z).softmax(dim=1)  # (B, classes, T)
        chosen = probs.gather(1, codes[:, None])[:, 0]
        return chosen.masked_fill(probs.argmax(dim=1) == codes, 1.0).min().item()

    floored = generate(decoder, z, POOL, seed=3, floor=0.02, backend=backend)
    assert worst_probability(floored) >= 0.02 - 1e-4
    assert worst_probability(generate(decoder, z, POOL, seed=3, backend=backend)) < 0.02
    assert torch.equal(floored, generate(decoder, z, POOL, seed=3, floor=0.02, backend="naive"))


def test_the_default_lead_in_covers_the_decoders_receptive_field():
    """Sampling's default lead-in is the receptive field rounded up to whole latent frames; an
    explicit one is used as given."""
    assert Sampling().lead_frames(512, 8000, 200) == 3
    assert Sampling().lead_frames(600, 8000, 200) == 3
    assert Sampling().lead_frames(601, 8000, 200) == 4
    assert Sampling(lead_seconds=0.05).lead_frames(512, 8000, 200) == 2
    assert Sampling(lead_seconds=0).lead_frames(512, 8000, 200) == 0
    with pytest.raises(ValueError, match="floor"):
        Sampling(floor=1.0)
    with pytest.raises(ValueError, match="floor"):
        Sampling(floor=-0.1)
    with pytest.raises(ValueError, match="emit='median'"):
        Sampling(emit="median")


def test_a_translation_encodes_the_clip_in_training_sized_windows():
    """The latent a translation decodes equals the latent of each training-sized window of the
    (lead-padded) clip encoded alone, not of the whole clip at once."""
    m = _model().eval()
    cfg = RunConfig(model=TINY, data=DataConfig(segment_samples=4 * POOL))
    translator = Translator(model=m, config=cfg)
    audio = torch.rand(12 * POOL) - 0.5
    z = translator._chunk_latents(audio, chunk=12, lead=0)[0]  # one chunk: the whole clip
    windows = torch.cat([m.encode(audio[None, i:i + 4 * POOL])[0]
                         for i in range(0, 12 * POOL, 4 * POOL)], dim=-1)
    torch.testing.assert_close(z, windows)
    assert not torch.allclose(z, m.encode(audio[None])[0])


@pytest.mark.parametrize("backend", ["torch", FUSED])
def test_the_mean_output_is_each_steps_expectation_given_the_sampled_past(backend):
    """With levels, generation returns at every step the expectation of levels[c] under the
    decoder's teacher-forced distribution given the codes it sampled (same seed), and both
    steps agree."""
    m = _model().eval()
    decoder, z = m.decoders["b"], torch.randn(2, 4, 4)
    levels = torch.linspace(-1, 1, 256)
    codes = generate(decoder, z, POOL, seed=5, backend=backend)
    means = generate(decoder, z, POOL, seed=5, backend=backend, levels=levels)
    with torch.no_grad():
        expected = (decoder(codes, z).softmax(dim=1) * levels[None, :, None]).sum(dim=1)
    torch.testing.assert_close(means, expected, atol=1e-4, rtol=1e-4)
