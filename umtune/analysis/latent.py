"""What the shared encoder's latent holds: domain information (it should not) and pitch (it should).

- `latent_domain_accuracy`: the paper's domain-confusion objective asks the latent to be
  domain-independent (section 3). We measure it after the fact with a fresh probe: the frozen
  encoder's latents of held-out audio of every trained domain, averaged over windows of about
  0.1 s, train a logistic regression (zero-initialised, full-batch Adam: deterministic) on the
  first 70% of each file's windows and are scored on the rest. On the built-in dataset the held-out
  pieces are the same on every domain, so only timbre can tell the domains apart. Chance is 1/K;
  a probe at chance means the latent hides the domain.
- `pitch_similarity`: the paper's NSynth analysis (section 4) finds that encodings of the same
  pitch played by different instruments are more alike than encodings of different pitches.
  From the dataset's note set (isolated notes labelled with their MIDI pitch, on every domain
  including the unseen one) each note's latent is averaged over its audible frames (frame RMS
  within 20 dB of the note's loudest frame) and centred by subtracting the mean over all notes
  (otherwise a shared offset makes every cosine close to 1). Reported: the mean cosine over
  pairs on different instruments with the same pitch, and with different pitches.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from umtune.data import Dataset
from umtune.trainable.model import UniversalTranslator

PROBE_WINDOW_SECONDS = 0.1
PROBE_TRAIN_SHARE = 0.7
PROBE_STEPS = 300
AUDIBLE_NOTE_DB = 20.0


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
    x, y = torch.cat(train_x), torch.cat(train_y)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    probe = torch.nn.Linear(x.shape[1], len(domains))
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):
            loss = F.cross_entropy(probe((x - mean) / std), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = probe((torch.cat(test_x) - mean) / std).argmax(dim=-1)
    return (pred == torch.cat(test_y)).float().mean().item()


def note_embeddings(model: UniversalTranslator, data: Dataset, device="cpu",
                    ) -> list[tuple[str, int, Tensor]]:
    """(domain, MIDI pitch, latent averaged over the note's audible frames) of every note file."""
    pool = model.cfg.encoder.pool
    out = []
    for domain in data.domains + data.unseen_domains:
        for entry in data.files(domain, "notes"):
            audio = data.audio(entry)
            n = audio.shape[0] // pool
            rms = np.sqrt((audio[:n * pool].astype(np.float64) ** 2).reshape(n, pool)
                          .mean(axis=1))
            audible = rms >= rms.max() * 10 ** (-AUDIBLE_NOTE_DB / 20) if n else rms > 0
            if not audible.any():
                continue
            last = int(np.nonzero(audible)[0][-1]) + 1  # encode up to the last audible frame
            z = encode(model, audio[:last * pool], device)  # (L, last)
            out.append((domain, int(entry.pitch),
                        z[:, torch.from_numpy(audible[:last])].mean(dim=1)))
    return out


def pitch_similarity(model: UniversalTranslator, data: Dataset,
                     device="cpu") -> tuple[float, float] | None:
    """(mean cosine, same pitch on different instruments; mean cosine, different pitches on
    different instruments) of centred note embeddings, or None without a usable note set."""
    notes = note_embeddings(model, data, device)
    if len({d for d, _, _ in notes}) < 2 or len({p for _, p, _ in notes}) < 2:
        return None
    emb = torch.stack([e for _, _, e in notes])
    emb = F.normalize(emb - emb.mean(dim=0), dim=1)
    cos = emb @ emb.T
    same, diff = [], []
    for i, j in itertools.combinations(range(len(notes)), 2):
        (di, pi, _), (dj, pj, _) = notes[i], notes[j]
        if di != dj:
            (same if pi == pj else diff).append(cos[i, j].item())
    if not same or not diff:
        return None
    return float(np.mean(same)), float(np.mean(diff))
