"""The content loss: chroma targets of real tones, the loss's range, its config rule, and that
training with it teaches the latent the pitch classes."""

from dataclasses import replace

import pytest
import torch
from test_loop import tiny_run

from umtune.config import RunConfig, TrainConfig
from umtune.data import Dataset
from umtune.trainable.content import content_loss, content_targets
from umtune.trainable.loop import Trainer

SR = 8000


def _tone(midi: float, seconds: float = 0.5, sr: int = SR) -> torch.Tensor:
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    t = torch.arange(round(seconds * sr)) / sr
    return sum(0.3 / h * torch.sin(2 * torch.pi * h * f0 * t) for h in (1, 2, 3))


def test_chroma_targets_name_the_pitch_class_of_a_harmonic_tone_in_every_frame():
    """A harmonic tone on A (MIDI 57) or C (60) peaks at its pitch class in every latent frame;
    silence is not audible."""
    audio = torch.stack([_tone(57), _tone(60), torch.zeros(SR // 2)])
    target, audible = content_targets(audio, SR, pool=100)
    assert target.shape == (3, 12, 40) and audible.shape == (3, 40)
    assert bool((target[0].argmax(dim=0) == 9).all()) and bool((target[1].argmax(dim=0) == 0).all())
    assert audible[:2].all() and not audible[2].any()


def test_content_loss_is_zero_for_the_target_and_two_for_its_opposite():
    audio = torch.stack([_tone(62), _tone(67)])
    target, _ = content_targets(audio, SR, pool=100)
    assert content_loss(target, audio, SR, pool=100).item() == pytest.approx(0.0, abs=1e-5)
    assert content_loss(-target, audio, SR, pool=100).item() == pytest.approx(2.0, abs=1e-5)


def test_content_loss_needs_the_content_head():
    with pytest.raises(ValueError, match="train.content_loss_weight.*content_head"):
        RunConfig(train=TrainConfig(content_loss_weight=1.0))


def test_training_with_the_content_loss_teaches_the_latent_the_pitch_classes(tiny_dataset):
    """On real four-voice renderings, 120 steps with the content loss lower it (the untrained
    head scores near 1, a random direction)."""
    cfg = tiny_run(tiny_dataset, lr=1e-2)
    encoder = replace(cfg.model.encoder, blocks=1, layers_per_block=8, channels=16,
                      latent_channels=12)  # a field of 513 samples resolves the pitch
    cfg = replace(cfg, model=replace(cfg.model, content_head=True, encoder=encoder),
                  train=replace(cfg.train, content_loss_weight=1.0),
                  data=replace(cfg.data, segment_samples=2000))
    trainer = Trainer(cfg, Dataset.open(tiny_dataset))
    losses = [trainer.step()["content_loss"] for _ in range(120)]
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.05, (first, last)
