"""The translation-quality metrics, each checked on known answers: the truth scores perfectly
against itself, noise scores at chance or poorly, an untranslated source scores the baseline."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_loop import tiny_run

from umtune.analysis.classifier import CACHE_DIR, CACHE_FILE, SUMMARY_FILE, domain_classifier
from umtune.analysis.evaluate import reconstruction_ce, score_translations, select_clips
from umtune.analysis.features import chroma, chroma_similarity, logmel_distance
from umtune.analysis.latent import (
    PROBE_STEPS,
    latent_domain_accuracy,
    linear_probes,
    note_latent_gain,
    pitch_probe_accuracy,
)
from umtune.data import Dataset
from umtune.trainable.loop import heldout_batch
from umtune.trainable.model import UniversalTranslator, decoder_receptive_field, latent_use

SR = 16000


@pytest.fixture(scope="module")
def ds(tiny_dataset) -> Dataset:
    return Dataset.open(tiny_dataset)


@pytest.fixture(scope="module")
def clips(ds):
    """Two 1 s held-out clips, the same music on piano, flute and whistle."""
    return select_clips(ds, ds.domains + ds.unseen_domains, 2, SR, seed=0)


def _stack(clips, domain) -> torch.Tensor:
    return torch.from_numpy(np.stack([c.audio[domain] for c in clips]))


def _noise(shape, seed=0) -> torch.Tensor:
    return 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class SpectrumEncoder:
    """A stand-in encoder whose latent is each frame's log magnitude spectrum (pool samples)."""

    def __init__(self, pool=400):
        self.cfg = SimpleNamespace(encoder=SimpleNamespace(pool=pool))

    def encode(self, audio):  # (B, T) -> (B, bins, T // pool)
        pool = self.cfg.encoder.pool
        frames = audio[:, : audio.shape[1] // pool * pool].unflatten(1, (-1, pool))
        return torch.log1p(100 * torch.fft.rfft(frames).abs()).transpose(1, 2)


def _zero_encoder_model(tiny_dataset):
    model = UniversalTranslator(tiny_run(tiny_dataset).model).eval()
    for p in model.encoder.parameters():
        torch.nn.init.zeros_(p)
    return model


def test_chroma_and_logmel_of_a_clip_against_itself_are_perfect(clips):
    """A clip has chroma similarity 1 and log-mel distance 0 to itself."""
    x = _stack(clips, "piano")
    assert torch.allclose(chroma_similarity(x, x, SR), torch.ones(2), atol=1e-5)
    assert torch.equal(logmel_distance(x, x, SR), torch.zeros(2))


def test_noise_has_no_chroma_in_common_with_music(clips):
    """White noise correlates with a piece's chroma near 0; another instrument's rendering of
    the same notes correlates strongly (the ceiling)."""
    piano, flute = _stack(clips, "piano"), _stack(clips, "flute")
    assert chroma_similarity(_noise(piano.shape), piano, SR).abs().max() < 0.25
    assert chroma_similarity(flute, piano, SR).min() > 0.6


def test_white_noise_folds_to_a_flat_chroma():
    """Every pitch class gets the same share of white noise (linear bins, log semitones), at
    16 and 8 kHz, so noise correlates with no music."""
    for sr in (16000, 8000):
        c, _ = chroma(_noise((16, 2 * sr)), sr)
        assert c.mean(dim=(0, 2)).abs().max() < 0.03


def test_chroma_of_a_silent_candidate_is_zero_and_of_a_silent_reference_undefined():
    """Silence has no pitch: 0 against music, NaN (nothing to compare) as the reference."""
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(SR) / SR)
    assert chroma_similarity(torch.zeros(SR), tone, SR).item() == 0
    assert torch.isnan(chroma_similarity(tone, torch.zeros(SR), SR))


def test_chroma_hears_the_pitch_class_not_the_octave():
    """A4 and A5 share a pitch class (high similarity); A4 and D#5 do not."""
    t = torch.arange(SR) / SR
    a4, a5, ds5 = (torch.sin(2 * torch.pi * f * t) for f in (440.0, 880.0, 622.25))
    assert chroma_similarity(a5, a4, SR) > 0.9
    assert chroma_similarity(ds5, a4, SR) < 0.1


def test_domain_classifier_is_accurate_on_real_heldout_audio_and_cached(ds):
    """Trained on the training split, it labels held-out renderings correctly; it is cached in
    the dataset (weights_only) and a second call loads the same classifier."""
    clf = domain_classifier(ds)
    assert clf.domains == ds.domains and clf.heldout_acc >= 0.9
    path = ds.path / CACHE_DIR / CACHE_FILE
    assert path.is_file() and (ds.path / CACHE_DIR / SUMMARY_FILE).is_file()
    torch.load(path, weights_only=True)
    again = domain_classifier(ds)
    x = _noise((3, SR))
    assert torch.equal(clf.logits(x), again.logits(x))


def test_truth_scores_perfectly(ds, clips):
    """The true rendering as the 'translation': timbre 1, chroma to truth 1, distance 0, gain 1,
    and chroma to source equal to the truth-vs-truth ceiling."""
    clf = domain_classifier(ds)
    for source, target in (("piano", "flute"), ("flute", "piano"), ("whistle", "piano")):
        truth = _stack(clips, target)
        m = score_translations(clf, target, truth, _stack(clips, source), truth, SR)
        assert m["timbre_acc"] == 1.0
        assert m["chroma_to_truth"] == pytest.approx(1.0, abs=1e-5)
        assert m["spectral_distance"] == 0.0 and m["translation_gain"] == 1.0
        assert m["chroma_to_source"] == pytest.approx(m["chroma_ceiling"])
        assert m["identity_distance"] > 5.0  # different instruments are far apart


def test_untranslated_source_scores_the_identity_baseline(ds, clips):
    """The source itself as the 'translation': distance = identity distance, gain 0, chroma to
    source 1, and it is not labelled as the target."""
    clf = domain_classifier(ds)
    source, truth = _stack(clips, "piano"), _stack(clips, "flute")
    m = score_translations(clf, "flute", source, source, truth, SR)
    assert m["spectral_distance"] == m["identity_distance"] and m["translation_gain"] == 0.0
    assert m["chroma_to_source"] == pytest.approx(1.0, abs=1e-5)
    assert m["timbre_acc"] == 0.0


def test_noise_scores_chance_timbre_no_chroma_and_a_negative_gain(ds, clips):
    """Noise 'translations': timbre accuracy averaged over targets is at most chance, chroma
    near 0, and noise is further from the truth than the untranslated source."""
    clf = domain_classifier(ds)
    scores = []
    for source, target in (("piano", "flute"), ("flute", "piano")):
        source_audio, truth = _stack(clips, source), _stack(clips, target)
        scores.append(score_translations(clf, target, _noise(truth.shape), source_audio, truth,
                                         SR))
    assert np.mean([m["timbre_acc"] for m in scores]) <= 1 / len(ds.domains)
    for m in scores:
        assert abs(m["chroma_to_source"]) < 0.25 and abs(m["chroma_to_truth"]) < 0.25
        assert m["translation_gain"] < 0


def test_pairs_without_truth_have_null_truth_metrics(ds, clips):
    """Without a true rendering only timbre and chroma to source are scored."""
    clf = domain_classifier(ds)
    m = score_translations(clf, "flute", _stack(clips, "flute"), _stack(clips, "piano"), None, SR)
    assert m["timbre_acc"] == 1.0 and m["chroma_to_source"] > 0.5
    assert all(m[k] is None for k in ("chroma_to_truth", "chroma_ceiling", "spectral_distance",
                                      "identity_distance", "translation_gain"))


def test_latent_probe_is_at_chance_on_a_latent_without_information(ds, tiny_dataset):
    """An encoder whose latent is constant hides the domain: the probe scores exactly 1/K."""
    model = _zero_encoder_model(tiny_dataset)
    assert latent_domain_accuracy(model, ds, ds.domains) == pytest.approx(1 / len(ds.domains))


def test_latent_probe_finds_the_domain_in_a_spectral_latent(ds):
    """A 'latent' that is the spectrum keeps the timbre: the probe tells the domains apart."""
    assert latent_domain_accuracy(SpectrumEncoder(), ds, ds.domains) >= 0.9


def test_probes_fit_together_predict_what_each_fit_alone_predicts():
    """linear_probes' K stacked fits equal K separate logistic regressions (nn.Linear, its own
    standardisation and Adam) on each probe's training rows, here on rows whose class means
    differ by less than their spread (so the predictions are not trivially all right)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=gen)
    x = torch.randn(300, 6, generator=gen) * 3 + 5 + y[:, None] * 0.8
    train = torch.rand(3, 300, generator=gen) < torch.tensor([[0.3], [0.5], [0.8]])
    together = linear_probes(x, y, train, 4)
    for k in range(3):
        tx, ty = x[train[k]], y[train[k]]
        mean, std = tx.mean(dim=0), tx.std(dim=0)
        probe = torch.nn.Linear(6, 4)
        torch.nn.init.zeros_(probe.weight)
        torch.nn.init.zeros_(probe.bias)
        opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-4)
        for _ in range(PROBE_STEPS):
            loss = torch.nn.functional.cross_entropy(probe((tx - mean) / std), ty)
            opt.zero_grad()
            loss.backward()
            opt.step()
        alone = probe((x - mean) / std).argmax(dim=-1)
        assert torch.equal(together[k], alone)
        assert 0.3 < (alone == y).float().mean() < 0.95


def test_pitch_probe_reads_pitch_from_a_spectral_latent_on_an_instrument_it_never_saw(ds):
    """Spectral 'latents' hold the pitch in a form shared by instruments: a probe trained on
    the other instrument names the pitch of most frames (chance 1/4)."""
    accuracy, chance = pitch_probe_accuracy(SpectrumEncoder(), ds, ds.domains)
    assert chance == 0.25 and accuracy > 0.6


def test_pitch_probe_of_a_constant_latent_is_no_better_than_guessing(ds, tiny_dataset):
    """A latent that is the same for every note carries no pitch: the probe can only guess."""
    accuracy, _ = pitch_probe_accuracy(_zero_encoder_model(tiny_dataset), ds, ds.domains)
    assert accuracy <= 0.4


def test_reconstruction_ce_is_the_training_loops_heldout_ce(ds, tiny_dataset):
    """The per-domain CE and latent gains equal the loop's held-out figures (`latent_use` on
    the fixed held-out segments), and an untrained decoder is near log(256) nats/sample."""
    cfg = tiny_run(tiny_dataset)
    model = UniversalTranslator(replace(cfg.model)).eval()
    ce, gains, gain_cold = reconstruction_ce(model, cfg, ds)
    batch = heldout_batch(cfg, ds)
    with torch.no_grad():
        use = latent_use(model.autoencoder, model.encoder(batch.clean_inputs), batch.targets,
                         cold_samples=decoder_receptive_field(cfg.model.decoder))
    assert list(ce.values()) == pytest.approx(use.ce.tolist(), rel=1e-5)
    assert list(gains.values()) == pytest.approx(use.gain.tolist(), abs=1e-5)
    assert gain_cold == pytest.approx(use.gain_cold.mean().item(), abs=1e-5)
    assert all(abs(v - np.log(256)) < 0.5 for v in ce.values())


def test_note_latent_gain_is_zero_for_decoders_deaf_to_the_latent(ds, tiny_dataset):
    """Decoders whose conditioning is zeroed gain nothing from any note's latent; with the
    conditioning they gain something (a random latent differs between pitches)."""
    model = UniversalTranslator(tiny_run(tiny_dataset).model).eval()
    gain, onset = note_latent_gain(model, ds, ds.domains)
    assert gain != 0.0 and onset is not None
    with torch.no_grad():
        for decoder in model.decoders.values():
            decoder.cond.weight.zero_()
    assert note_latent_gain(model, ds, ds.domains) == (0.0, 0.0)
