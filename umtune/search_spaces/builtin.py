"""The named spaces, each a function of the base config returning a `SearchSpace`.

- `paper`: the hyperparameters the paper fixes, around its values (Mor et al. 2018, section 3):
  the confusion weight lambda (log-uniform around 1e-2, or exactly 0: the no-confusion ablation),
  the augmentation range, both dilation schedules, the learning rate and the latent size.
- `ablation`: the paper's ablation grid, lambda off and on (the base config's, or 1e-2) x
  augmentation off and on (the base's, or 0.5 semitones), each from two training seeds.
- `lambda-aug`: lambda (or 0) and the augmentation range only, sampled: the demo sweep's space.
"""

from __future__ import annotations

from umtune.config import DILATION_PATTERNS, RunConfig, dilation_schedule
from umtune.search_spaces.space import Param, SearchSpace

PAPER_LAMBDA = 1e-2
PAPER_SEMITONES = 0.5


def dilation_choices(blocks: int, layers_per_block: int, segment_samples: int) -> tuple[str, ...]:
    """Named patterns valid for this block shape, one name per distinct schedule (two names for
    one schedule would only split a categorical's trials), and without dilations of a whole
    training segment or more (such layers see only padding and pad memory grows with them)."""
    preferred = sorted(DILATION_PATTERNS, key=lambda name: name.startswith("cycle"))
    names = {}
    for name in preferred:
        try:
            schedule = dilation_schedule(name, blocks, layers_per_block)
        except ValueError:  # e.g. "nonrepeating" beyond 16 layers
            continue
        if max(schedule) < segment_samples:
            names.setdefault(schedule, name)
    return tuple(names.values())


def latent_choices(latent_channels: int) -> tuple[int, ...]:
    """A quarter, half, once and twice the base's latent size: a tighter bottleneck carries less
    domain information, a wider one reconstructs better."""
    return tuple(sorted({max(1, latent_channels * k // 4) for k in (1, 2, 4, 8)}))


def paper(base: RunConfig) -> SearchSpace:
    enc, dec = base.model.encoder, base.model.decoder
    segment = base.data.segment_samples
    return SearchSpace("paper", "the paper's fixed hyperparameters, around its values", (
        Param("train.confusion_lambda", "loguniform", PAPER_LAMBDA / 10, PAPER_LAMBDA * 10,
              off_value=0.0),
        Param("train.aug_semitones", "uniform", 0.0, 1.0),
        Param("model.encoder.dilations", "choice",
              values=dilation_choices(enc.blocks, enc.layers_per_block, segment)),
        Param("model.decoder.dilations", "choice",
              values=dilation_choices(dec.blocks, dec.layers_per_block, segment)),
        Param("train.lr", "loguniform", base.train.lr / 10, base.train.lr * 3),
        Param("model.encoder.latent_channels", "choice",
              values=latent_choices(enc.latent_channels)),
    ))


def ablation(base: RunConfig) -> SearchSpace:
    lam = base.train.confusion_lambda or PAPER_LAMBDA
    aug = base.train.aug_semitones or PAPER_SEMITONES
    return SearchSpace("ablation", "the paper's ablation: confusion lambda (the base's, or the "
                       "paper's 1e-2) x augmentation (likewise, 0.5), each off and on, every arm "
                       "trained from two seeds (a difference smaller than the spread over seeds "
                       "is no verdict)", (
        Param("train.confusion_lambda", "grid", values=(0.0, lam)),
        Param("train.aug_semitones", "grid", values=(0.0, aug)),
        Param("train.seed", "grid", values=(base.train.seed, base.train.seed + 1)),
    ))


def lambda_aug(base: RunConfig) -> SearchSpace:
    return SearchSpace("lambda-aug", "the two components of the method: confusion lambda (or 0) "
                       "and the augmentation range, sampled (the demo sweep)", (
        Param("train.confusion_lambda", "loguniform", PAPER_LAMBDA / 10, PAPER_LAMBDA * 10,
              off_value=0.0),
        Param("train.aug_semitones", "uniform", 0.0, 1.0),
    ))


SPACES = {"paper": paper, "ablation": ablation, "lambda-aug": lambda_aug}
