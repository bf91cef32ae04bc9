"""The leading indicators of translation, measured at every epoch end of training.

A translation keeps the source's notes only if (1) the encoder's latent holds the pitch, (2) the
decoders use the latent, and (3) what they generate from it plays those notes. Held-out CE says
none of this. The training loop measures (2) itself (the latent gain, loop.py); this module
adds (1) and (3), which need the analysis tools, and the loop receives it as its `indicators`
callback:

- `pitch_probe_acc` (and `pitch_probe_chance`): the leave-one-domain-out linear pitch probe on
  the note set's latent frames (latent.py).
- `note_latent_gain` (and `note_latent_gain_onset`): the latent gain on the note set with each
  note's latent swapped for another pitch's: whether the decoders use the pitch (latent.py).
- `recon_chroma`: each domain's own decoder regenerates `train.indicator_seconds` of a fixed
  held-out clip of its domain from the clip's latent, with the generator translation uses
  (chunks entered through a lead-in); the chroma similarity (features.py) of that
  reconstruction to the clip. 1: the notes come back; about 0: they do not.

All decoders generate side by side (`Translator.translate_many`), so the cost is about one
decoder's generation of `indicator_seconds` plus the lead-ins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from umtune.analysis.evaluate import select_clips
from umtune.analysis.features import chroma_similarity
from umtune.analysis.latent import note_latent_gain, pitch_probe_accuracy
from umtune.config import RunConfig
from umtune.data import Dataset
from umtune.trainable.generate import DEFAULT_SAMPLING, Translator
from umtune.trainable.model import UniversalTranslator

INDICATOR_SEED = 0


@dataclass
class LeadingIndicators:
    """The `indicators` callback of `loop.train` for a run config (picklable: Ray Train
    workers receive it; the dataset and its clips are opened on first use)."""

    cfg: RunConfig
    _clips: list | None = field(default=None, init=False, repr=False)
    _data: Dataset | None = field(default=None, init=False, repr=False)

    def __call__(self, model: UniversalTranslator) -> dict[str, float]:
        data = self._dataset()
        device = next(model.parameters()).device
        out = {}
        pitch = pitch_probe_accuracy(model, data, self.cfg.model.domains, device)
        if pitch is not None:
            out["pitch_probe_acc"], out["pitch_probe_chance"] = pitch
        gain = note_latent_gain(model, data, self.cfg.model.domains, device)
        if gain is not None:
            out["note_latent_gain"], out["note_latent_gain_onset"] = gain
        if self.cfg.train.indicator_seconds > 0:
            out["recon_chroma"] = reconstruction_chroma(model, self.cfg, self.held_out_clips())
        return out

    def _dataset(self) -> Dataset:
        if self._data is None:
            self._data = Dataset.open(self.cfg.data.path)
        return self._data

    def held_out_clips(self) -> list:
        """The fixed held-out clip per domain that recon_chroma regenerates (read once)."""
        if self._clips is None:
            data = self._dataset()
            pool = self.cfg.model.encoder.pool
            length = max(1, round(self.cfg.train.indicator_seconds * data.sample_rate / pool))
            self._clips = select_clips(data, self.cfg.model.domains, 1, length * pool,
                                       INDICATOR_SEED)
        return self._clips


@torch.no_grad()
def reconstruction_chroma(model: UniversalTranslator, cfg: RunConfig, clips: list) -> float:
    """Mean chroma similarity of each domain's own reconstruction of its clips to the clips."""
    translator = Translator(model=model, config=cfg)
    domains = cfg.model.domains
    sr = cfg.data.sample_rate
    out = translator.translate_many({d: [c.audio[d] for c in clips] for d in domains}, sr,
                                    DEFAULT_SAMPLING)
    scores = [chroma_similarity(torch.stack(out[d]), torch.stack(
        [torch.from_numpy(c.audio[d]) for c in clips]), sr) for d in domains]
    return torch.cat(scores).nanmean().item()
