"""What the shared encoder's latent holds: domain information (it should not) and pitch (it should).

- `latent_domain_accuracy`: the paper's domain-confusion objective asks the latent to be
  domain-independent (section 3). We measure it after the fact with a fresh probe: the frozen
  encoder's latents of held-out audio of every trained domain, averaged over windows of about
  0.1 s, train a logistic regression (zero-initialised, full-batch Adam: deterministic) on the
  first 70% of each file's windows and are scored on the rest. On the built-in dataset the held-out
  pieces are the same on every domain, so only timbre can tell the domains apart. Chance is 1/K;
  a probe at chance means the latent hides the domain.
- `pitch_probe_accuracy`: a translation can only keep the notes if the latent holds them. From
  the dataset's note set (isolated notes labelled with their MIDI pitch, on every domain
  including the unseen one) every audible latent frame of a note's first half second (frame RMS
  within 20 dB of its loudest) is an example; the same kind of linear probe learns the pitch
  from the frames of all trained domains but one and is scored on the one left out, in turn
  for every domain (the unseen one is only ever scored). Chance is 1 / (number of pitches).
  The paper's own check of this (section 4, NSynth) compares embedding distances; a probe
  scored on an instrument it never saw says directly whether pitch is readable apart from
  timbre.
- `note_latent_gain`: whether the decoders use that pitch: the latent gain on the note set with
  each note's latent swapped for another pitch's on the same instrument. The latent gain of
  music clips also counts loudness and rests; between two notes of one instrument only the
  pitch differs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from umtune.data import Dataset
from umtune.trainable.model import (
    UniversalTranslator,
    audio_to_codes,
    decoder_receptive_field,
    latent_use,
)

PROBE_WINDOW_SECONDS = 0.1
PROBE_TRAIN_SHARE = 0.7
PROBE_STEPS = 300
AUDIBLE_NOTE_DB = 20.0
NOTE_PROBE_SECONDS = 0.5  # of each note, from its onset: the attack and the sustain
# Notes encoded this many at a time: on the CPU a batch of all ~100 notes makes every
# activation a fresh allocation of ~100 MB that the kernel must map and zero (glibc serves
# large blocks by mmap), and the encoder runs 4-7x slower than in batches of a few notes.
ENCODE_ROWS = 8


@torch.no_grad()
def encode(model: UniversalTranslator, audio: np.ndarray, device) -> Tensor:
    """One waveform (T,) -> latent (L, T // pool) on the CPU (T cut to a multiple of pool)."""
    pool = model.cfg.encoder.pool
    n = audio.shape[0] // pool * pool
    x = torch.from_numpy(np.ascontiguousarray(audio[:n])).to(device)
    return model.encode(x.unsqueeze(0))[0].float().cpu()


def _windows(z: Tensor, size: int) -> Tensor:
    """Latent (L, F) -> window means (F // size, L)."""
    n = z.shape[1] // size
    return z[:, :n * size].unflatten(1, (n, size)).mean(dim=2).T


def linear_probes(x: Tensor, y: Tensor, train: Tensor, classes: int) -> Tensor:
    """Predictions (K, N) for every row of x (N, D) of K logistic regressions, probe k fit on
    the rows where train[k] (K, N) holds, labels y (N,): features standardised with each
    probe's training statistics, zero-initialised weights, full-batch Adam (deterministic).

    The K fits run as one: each probe's loss reaches only its own weights and Adam (with its
    weight decay) updates elementwise, so one Adam over the stacked weights is K separate fits,
    at the Python cost of one.
    """
    weights = train.float()  # (K, N)
    count = weights.sum(dim=1, keepdim=True)
    mean = weights @ x / count  # (K, D)
    centred = x - mean[:, None]  # (K, N, D)
    var = (weights[..., None] * centred.pow(2)).sum(dim=1) / (count - 1)  # unbiased, as std()
    features = centred / var.sqrt().clamp_min(1e-6)[:, None]
    k, d = mean.shape
    weight = torch.zeros(k, d, classes, requires_grad=True)
    bias = torch.zeros(k, 1, classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05, weight_decay=1e-4)
    targets = y.expand(k, -1)
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):
            ce = F.cross_entropy(torch.baddbmm(bias, features, weight).transpose(1, 2), targets,
                                 reduction="none")  # (K, N)
            loss = ((ce * weights).sum(dim=1) / count[:, 0]).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.baddbmm(bias, features, weight).argmax(dim=-1)


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, classes: int) -> Tensor:
    """Predictions for test_x of one `linear_probes` probe fit on (train_x, train_y)."""
    x = torch.cat([train_x, test_x])
    y = torch.cat([train_y, torch.zeros(len(test_x), dtype=train_y.dtype)])
    train = torch.arange(len(x)) < len(train_x)
    return linear_probes(x, y, train[None], classes)[0, len(train_x):]


def latent_domain_accuracy(model: UniversalTranslator, data: Dataset, domains: tuple[str, ...],
                           *, seconds_per_domain: float = 4.0, device="cpu") -> float:
    """Held-out accuracy of a fresh linear probe for the domain on frozen latents (chance 1/K)."""
    pool = model.cfg.encoder.pool
    size = max(1, round(PROBE_WINDOW_SECONDS * data.sample_rate / pool))
    train_x, train_y, test_x, test_y = [], [], [], []
    for k, domain in enumerate(domains):
        budget = round(seconds_per_domain * data.sample_rate)
        for entry in data.files(domain, "heldout"):
            if budget < 2 * size * pool:
                break
            audio = data.audio(entry)[:budget]
            budget -= audio.shape[0]
            w = _windows(encode(model, audio, device), size)
            cut = int(round(PROBE_TRAIN_SHARE * w.shape[0]))
            if cut == 0 or cut == w.shape[0]:
                continue
            train_x.append(w[:cut])
            test_x.append(w[cut:])
            train_y.append(torch.full((cut,), k))
            test_y.append(torch.full((w.shape[0] - cut,), k))
    if not train_x or len(set(torch.cat(train_y).tolist())) < len(domains):
        raise ValueError("latent domain probe: too little held-out audio; expected at least "
                         f"{2 * size * pool} samples per domain")
    pred = linear_probe(torch.cat(train_x), torch.cat(train_y), torch.cat(test_x), len(domains))
    return (pred == torch.cat(test_y)).float().mean().item()


def note_frames(model: UniversalTranslator, data: Dataset, device="cpu",
                ) -> list[tuple[str, int, Tensor]]:
    """(domain, MIDI pitch, audible latent frames (n, L)) of the first NOTE_PROBE_SECONDS of
    every file of the note set, encoded as one batch."""
    pool = model.cfg.encoder.pool
    entries = [e for d in data.domains + data.unseen_domains for e in data.files(d, "notes")]
    if not entries:
        return []
    frames = max(1, min(min(e.num_samples for e in entries),
                        round(NOTE_PROBE_SECONDS * data.sample_rate)) // pool)
    audio = np.stack([data.audio(e)[:frames * pool] for e in entries])  # (N, frames * pool)
    rms = np.sqrt((audio.astype(np.float64) ** 2).reshape(len(entries), frames, pool)
                  .mean(axis=2))
    audible = rms >= rms.max(axis=1, keepdims=True) * 10 ** (-AUDIBLE_NOTE_DB / 20)
    audible &= rms > 0
    with torch.no_grad():
        z = torch.cat([model.encode(rows.to(device)).float().cpu()  # (N, L, frames)
                       for rows in torch.from_numpy(audio).split(ENCODE_ROWS)])
    return [(e.domain, int(e.pitch), z[i][:, torch.from_numpy(audible[i])].T)
            for i, e in enumerate(entries) if audible[i].any()]


def pitch_probe_accuracy(model: UniversalTranslator, data: Dataset, domains: tuple[str, ...],
                         device="cpu") -> tuple[float, float] | None:
    """(mean held-out accuracy of the leave-one-domain-out pitch probe, chance), or None
    without a note set of at least two pitches on two trained domains."""
    notes = note_frames(model, data, device)
    pitches = sorted({p for _, p, _ in notes})
    trained = [d for d in domains if any(n[0] == d for n in notes)]
    if len(pitches) < 2 or len(trained) < 2:
        return None
    label = {p: i for i, p in enumerate(pitches)}
    tested = trained + [d for d in data.unseen_domains if any(n[0] == d for n in notes)]
    x = torch.cat([z for _, _, z in notes])
    y = torch.cat([torch.full((len(z),), label[p]) for _, p, z in notes])
    domain = np.concatenate([[d] * len(z) for d, _, z in notes])
    in_training = torch.from_numpy(np.isin(domain, trained))
    held = torch.from_numpy(np.stack([domain == test for test in tested]))  # (K, N)
    pred = linear_probes(x, y, in_training & ~held, len(pitches))  # one probe per left-out domain
    scores = [(pred[i, rows] == y[rows]).float().mean().item() for i, rows in enumerate(held)]
    return float(np.mean(scores)), 1 / len(pitches)


NOTE_GAIN_SECONDS = 0.25  # the onset and the start of each note's sustain


@torch.no_grad()
def note_latent_gain(model: UniversalTranslator, data: Dataset, domains: tuple[str, ...],
                     device="cpu") -> tuple[float, float] | None:
    """How much the decoders use the latent's pitch: the latent gain (`latent_use`) on the
    note set, where each note's latent is swapped for that of another pitch on the same
    instrument (same envelope and loudness), over
    the first NOTE_GAIN_SECONDS of every note and over its first receptive field (the onset).
    Every other pitch of the note set is used (half the cost; 6 semitones apart in the built-in
    one). Returns (gain, onset gain) in nats/sample, or None without notes of two such pitches
    on every trained domain."""
    notes = {d: sorted(data.files(d, "notes"), key=lambda e: e.pitch)[::2] for d in domains}
    counts = {len(n) for n in notes.values()}
    if len(counts) != 1 or min(counts) < 2:
        return None
    pool = model.cfg.encoder.pool
    shortest = min(e.num_samples for n in notes.values() for e in n)
    length = max(1, min(shortest, round(NOTE_GAIN_SECONDS * data.sample_rate)) // pool) * pool
    audio = torch.from_numpy(np.stack([data.audio(e)[:length] for d in domains
                                       for e in notes[d]])).to(device)
    codes = audio_to_codes(audio, model.cfg)
    z = torch.cat([model.encode(rows) for rows in audio.split(ENCODE_ROWS)])
    use = latent_use(model.autoencoder, z, codes, decoder_receptive_field(model.cfg.decoder))
    return use.gain.mean().item(), use.gain_cold.mean().item()
