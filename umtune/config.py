"""The one configuration tree of a run: frozen dataclasses, presets, and checkpoint upgrades.

A run is described once by a `RunConfig` (built by the CLI, a preset or a Tune trial) and passed
explicitly; components receive only their own sub-config. Change a config with
`dataclasses.replace`; every dataclass validates itself in `__post_init__` and names the field.
Sizes follow Mor et al. 2018, section 3 and the official code (see ../shared/DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from umtune.storage import absolute

CONFIG_VERSION = 2

DEFAULT_DOMAINS = ("piano", "violin", "flute", "trumpet", "organ", "guitar")

LR_SCHEDULES = ("step", "cosine")
CONFUSION_TARGETS = ("max_ce", "uniform")
PRECISIONS = ("fp32", "bf16", "auto")

# Named dilation patterns (see `dilation_schedule`); an explicit tuple of ints is also accepted.
DILATION_PATTERNS = ("doubling", "cycle5", "cycle8", "cycle10", "cycle12", "cycle14",
                     "nonrepeating", "base3")


def _check(condition: bool, name: str, value: Any, expected: str) -> None:
    if not condition:
        raise ValueError(f"config field {name}={value!r}: expected {expected}")


# Field annotations (strings, under `from __future__ import annotations`) whose type is checked
# before any other rule: a bool where an int belongs, 1.5 where an int belongs or an infinite
# learning rate would otherwise pass the range checks or fail far from here.
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _check_types(obj: Any, section: str) -> None:
    """Every scalar field of `obj` holds its annotated type (ints exactly, floats finite, bools
    True or False) and every sub-config its dataclass; the error names `section.field`."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{section}.{f.name}" if section else f.name
        kind = _SCALARS.get(f.type) or globals().get(f.type)
        if kind is float:
            _check(isinstance(value, (int, float)) and not isinstance(value, bool)
                   and math.isfinite(value), name, value, "a finite number")
        elif kind is int:
            _check(isinstance(value, int) and not isinstance(value, bool), name, value,
                   "an integer")
        elif kind is bool:
            _check(isinstance(value, bool), name, value, "true or false")
        elif kind is str:
            _check(isinstance(value, str), name, value, "a string")
        elif dataclasses.is_dataclass(kind):
            _check(isinstance(value, kind), name, value,
                   f"a {kind.__name__} section (set its fields, e.g. {name}.FIELD=VALUE)")


def dilation_schedule(pattern: str | tuple[int, ...], blocks: int, layers_per_block: int,
                      ) -> tuple[int, ...]:
    """Dilation of every layer, in order, for a named pattern or an explicit list.

    - "doubling": 1, 2, 4, ... 2**(layers_per_block-1), restarting each block (the paper's
      cycle; with 10 layers per block this is the encoder's "doubling cycle of 10").
    - "cycleN": doubling that restarts every N layers, independent of the block size.
    - "nonrepeating": 1, 2, 4, ... across all layers without restarting (at most 16 layers).
    - "base3": 1, 3, 9, ... restarting each block.
    - a tuple of ints: used as given; its length must equal blocks * layers_per_block.
    """
    n = blocks * layers_per_block
    if isinstance(pattern, (tuple, list)):
        _check(all(isinstance(d, int) and not isinstance(d, bool) for d in pattern), "dilations",
               pattern, "a name or a list of integers")
        dil = tuple(pattern)
        _check(len(dil) == n, "dilations", pattern, f"{n} entries (blocks x layers_per_block)")
        _check(all(d >= 1 for d in dil), "dilations", pattern, "positive integers")
        return dil
    if pattern == "doubling":
        return tuple(2 ** (i % layers_per_block) for i in range(n))
    if pattern == "base3":
        return tuple(3 ** (i % layers_per_block) for i in range(n))
    if pattern == "nonrepeating":
        _check(n <= 16, "dilations", pattern, "at most 16 layers in all for 'nonrepeating'")
        return tuple(2**i for i in range(n))
    if pattern.startswith("cycle") and pattern[5:].isdigit() and int(pattern[5:]) > 0:
        cycle = int(pattern[5:])
        return tuple(2 ** (i % cycle) for i in range(n))
    raise ValueError(f"config field dilations={pattern!r}: expected one of "
                     f"{', '.join(DILATION_PATTERNS)}, 'cycleN' or a tuple of ints")


@dataclass(frozen=True)
class EncoderConfig:
    """Shared non-causal dilated residual encoder (paper: 3 blocks x 10 layers, 128 ch, k3)."""

    blocks: int = 3
    layers_per_block: int = 10
    channels: int = 128
    kernel_size: int = 3
    dilations: str | tuple[int, ...] = "doubling"
    latent_channels: int = 64
    pool: int = 800  # samples averaged into one latent frame (800 = 50 ms at 16 kHz)
    # Standardise each latent channel over the clip's frames. The domain sits mostly in the
    # latent's per-clip channel offsets, which this removes; the paper's latent is plain (False).
    normalize_latent: bool = False

    def __post_init__(self):
        _check_types(self, "model.encoder")
        for name in ("blocks", "layers_per_block", "channels", "latent_channels", "pool"):
            _check(getattr(self, name) >= 1, f"model.encoder.{name}", getattr(self, name), ">= 1")
        _check(self.kernel_size % 2 == 1, "model.encoder.kernel_size", self.kernel_size,
               "an odd size (the encoder is non-causal and centred)")
        if isinstance(self.dilations, list):
            object.__setattr__(self, "dilations", tuple(self.dilations))
        dilation_schedule(self.dilations, self.blocks, self.layers_per_block)


@dataclass(frozen=True)
class DecoderConfig:
    """One autoregressive WaveNet per domain (paper: 4 blocks x 14 layers)."""

    blocks: int = 4
    layers_per_block: int = 14
    residual_channels: int = 128
    gate_channels: int = 256  # output of the dilated conv, split into tanh and sigmoid halves
    skip_channels: int = 128
    kernel_size: int = 2
    dilations: str | tuple[int, ...] = "doubling"

    def __post_init__(self):
        _check_types(self, "model.decoder")
        for name in ("blocks", "layers_per_block", "residual_channels", "skip_channels"):
            _check(getattr(self, name) >= 1, f"model.decoder.{name}", getattr(self, name), ">= 1")
        _check(self.gate_channels >= 2 and self.gate_channels % 2 == 0,
               "model.decoder.gate_channels", self.gate_channels, "an even number >= 2")
        _check(self.kernel_size >= 2, "model.decoder.kernel_size", self.kernel_size, ">= 2")
        if isinstance(self.dilations, list):
            object.__setattr__(self, "dilations", tuple(self.dilations))
        dilation_schedule(self.dilations, self.blocks, self.layers_per_block)


@dataclass(frozen=True)
class ConfusionConfig:
    """Domain-confusion network on the latent (paper: 3 1x1-conv layers, ELU, dropout)."""

    layers: int = 3
    channels: int = 100
    dropout: float = 0.0

    def __post_init__(self):
        _check_types(self, "model.confusion")
        _check(self.layers >= 1, "model.confusion.layers", self.layers, ">= 1")
        _check(self.channels >= 1, "model.confusion.channels", self.channels, ">= 1")
        _check(0.0 <= self.dropout < 1.0, "model.confusion.dropout", self.dropout, "in [0, 1)")


def domain_name_problem(name: str) -> str | None:
    """Why `name` cannot name a domain (its decoder is the model's module of that name), or
    None: it must be non-empty, without ".", and not one of nn.ModuleDict's own attributes."""
    from torch import nn

    if not name or "." in name:
        return f"domain name {name!r} is empty or holds '.'; expected a name without dots"
    if hasattr(nn.ModuleDict(), name) or name.startswith("_"):
        return (f"domain name {name!r} is a reserved name of the model's module dictionary; "
                "expected another name")
    return None


@dataclass(frozen=True)
class ModelConfig:
    domains: tuple[str, ...] = DEFAULT_DOMAINS
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    confusion: ConfusionConfig = field(default_factory=ConfusionConfig)
    classes: int = 256  # mu-law quantisation levels
    # A 1x1 head on the latent predicting the input's chroma, trained by
    # train.content_loss_weight (trainable/content.py); not in the paper.
    content_head: bool = False
    # Pre-emphasis coefficient (LPCNet's 0.85): the network models x[t] - a * x[t - 1] and
    # generation de-emphasises, putting the sampling noise under the music's spectrum. 0 (the
    # paper): the waveform itself.
    pre_emphasis: float = 0.0

    def __post_init__(self):
        _check_types(self, "model")
        if isinstance(self.domains, list):
            object.__setattr__(self, "domains", tuple(self.domains))
        _check(isinstance(self.domains, tuple) and all(isinstance(d, str) and d
                                                       for d in self.domains)
               and len(self.domains) >= 2 and len(set(self.domains)) == len(self.domains),
               "model.domains", self.domains, "at least two distinct domain names")
        for name in self.domains:
            problem = domain_name_problem(name)
            _check(problem is None, "model.domains", self.domains, f"usable names: {problem}")
        _check(self.classes >= 2, "model.classes", self.classes, ">= 2")
        _check(0 <= self.pre_emphasis < 1, "model.pre_emphasis", self.pre_emphasis, "in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    path: str = "data/bach"  # dataset directory written by `umtune data`
    sample_rate: int = 16000  # must match the dataset's
    segment_samples: int = 12000  # training segment (0.75 s at 16 kHz)
    batch_per_domain: int = 2  # segments per domain in each step; every step sees every domain

    def __post_init__(self):
        _check_types(self, "data")
        _check(self.sample_rate >= 1000, "data.sample_rate", self.sample_rate, ">= 1000 Hz")
        _check(self.segment_samples >= 2, "data.segment_samples", self.segment_samples, ">= 2")
        _check(self.batch_per_domain >= 1, "data.batch_per_domain", self.batch_per_domain, ">= 1")

    def check_workers(self, workers: int) -> None:
        """Every training worker takes an equal share of each domain's batch."""
        if self.batch_per_domain % workers:
            raise ValueError(f"data.batch_per_domain={self.batch_per_domain} must be divisible "
                             f"by the number of workers ({workers})")

    def with_absolute_path(self) -> DataConfig:
        """The dataset as an absolute path (a URI as it is): Ray's workers and trials run in
        folders of their own."""
        return dataclasses.replace(self, path=absolute(self.path))


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    # "step": the paper's lr * lr_decay ** (step // lr_decay_every), made for runs of 100k+
    # steps; "cosine": lr annealed to 0 over the run's budget (max_minutes of training time if
    # set, else max_epochs) by the elapsed fraction, which a resumed run continues.
    lr_schedule: str = "step"
    lr_decay: float = 0.995  # multiplied into lr every lr_decay_every steps ("step")
    lr_decay_every: int = 1000
    # Generation and the held-out figures use an exponential moving average of the weights
    # with this decay per step (kept in the checkpoint); 0 (the paper): the weights themselves.
    ema_decay: float = 0.0
    grad_clip: float = 1.0  # clip gradients by value
    confusion_lambda: float = 1e-2  # weight of the adversarial term; 0 is the no-confusion ablation
    # What the encoder is trained to do to the confusion net: "max_ce" (the paper) maximises its
    # cross-entropy, which a confidently wrong answer satisfies without bound; "uniform" brings
    # its prediction to the uniform distribution (cross-entropy to it), a bounded target.
    confusion_target: str = "max_ce"
    confusion_lr: float = 1e-3
    aug_semitones: float = 0.5  # max |pitch shift| of the augmentation; 0 disables it
    # The shifted stretch is this share of the segment (the official code: L/4 .. L/2), so the
    # rest of every segment reaches the encoder in tune with the decoders' target.
    aug_min_fraction: float = 0.25
    aug_max_fraction: float = 0.5
    # Std of Gaussian noise on the decoders' teacher-forced input (input units: one mu-law step
    # is 1 / (classes - 1)). A decoder that cannot trust its past leans on the latent, and one
    # trained on noisy pasts drifts less on its own samples. 0 (the paper) disables it.
    decoder_input_noise: float = 0.0
    # Std (input units) of a slow random drift added to the decoders' teacher-forced input:
    # white noise through a one-pole low-pass at decoder_input_drift_hz. Free-running, the
    # decoders' own samples wander below ~120 Hz where the renderings are silent
    # (docs/results.md); a decoder trained on pasts that drift learns to predict the clean
    # signal from them instead of continuing the drift. 0 (the paper) disables it.
    decoder_input_drift: float = 0.0
    decoder_input_drift_hz: float = 60.0
    # Share of the decoders' teacher-forced input silenced, in spans of decoder_mask_span
    # samples, decaying linearly to 0 over decoder_mask_steps steps (0: never decays). Where its
    # past is masked a decoder can only learn the next sample from the latent: a curriculum
    # against decoders that model their instrument unconditionally. 0 (the paper) disables it.
    decoder_mask_fraction: float = 0.0
    decoder_mask_span: int = 64
    decoder_mask_steps: int = 0
    # Share of the decoders' teacher-forced past replaced by their own draws (parallel scheduled
    # sampling, Duckworth et al. 2019): a first, gradient-free pass samples each position from
    # its decoder given the true past, then this share of positions, drawn sample by sample,
    # feeds the drawn code to the trained pass instead of the true one (masked spans stay
    # silent). Generation continues from the decoders' own draws; a decoder trained only on
    # true pasts drifts on them. 0 (the paper) disables it.
    decoder_self_inputs: float = 0.0
    # Share of training segments spliced: from a random point in their middle half on, another
    # segment of the same domain (loop.splice). The latent changes notes there before the
    # decoders' past does, as at a note onset. 0 (the paper) disables it.
    splice_fraction: float = 0.0
    # Weight of the content loss: the latent's head must name the input's pitch classes
    # (trainable/content.py; needs model.content_head). 0 (the paper) disables it.
    content_loss_weight: float = 0.0
    steps_per_epoch: int = 50
    max_epochs: int = 1000
    max_minutes: float = 0.0  # time in training steps (not held-out eval or checkpoints), summed
    # over resumes; 0 means no limit
    eval_segments: int = 8  # held-out segments per domain scored at each epoch end (>= 2: the
    # latent gain swaps latents between them)
    # Seconds of one held-out clip per domain that each domain's decoder regenerates at every
    # epoch end, for the reconstruction-chroma indicator (analysis/indicators.py); 0: skip it.
    indicator_seconds: float = 0.5
    # "fp32", "bf16" (autocast) or "auto": bf16 where this device runs it faster than fp32,
    # measured once per machine (trainable/precision.py)
    precision: str = "fp32"
    # The autoencoder's forward and backward compiled (torch.compile): the same maths in fewer,
    # fused kernels; the first step pays the compilation. On the CPU the eager step's own
    # kernels are faster (docs/speed.md); for CUDA.
    compile: bool = False
    seed: int = 0

    def __post_init__(self):
        _check_types(self, "train")
        _check(self.lr > 0, "train.lr", self.lr, "> 0")
        _check(0 < self.lr_decay <= 1, "train.lr_decay", self.lr_decay, "in (0, 1]")
        _check(self.lr_decay_every >= 1, "train.lr_decay_every", self.lr_decay_every, ">= 1")
        _check(self.lr_schedule in LR_SCHEDULES, "train.lr_schedule", self.lr_schedule,
               " or ".join(map(repr, LR_SCHEDULES)))
        _check(0 <= self.ema_decay < 1, "train.ema_decay", self.ema_decay, "in [0, 1)")
        _check(self.confusion_target in CONFUSION_TARGETS, "train.confusion_target",
               self.confusion_target, " or ".join(map(repr, CONFUSION_TARGETS)))
        _check(self.precision in PRECISIONS, "train.precision", self.precision,
               " or ".join(map(repr, PRECISIONS)))
        _check(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "> 0")
        _check(self.confusion_lambda >= 0, "train.confusion_lambda", self.confusion_lambda, ">= 0")
        _check(self.confusion_lr > 0, "train.confusion_lr", self.confusion_lr, "> 0")
        _check(self.aug_semitones >= 0, "train.aug_semitones", self.aug_semitones, ">= 0")
        _check(self.decoder_input_noise >= 0, "train.decoder_input_noise",
               self.decoder_input_noise, ">= 0")
        _check(0 <= self.decoder_mask_fraction < 1, "train.decoder_mask_fraction",
               self.decoder_mask_fraction, "in [0, 1)")
        _check(self.decoder_input_drift >= 0, "train.decoder_input_drift",
               self.decoder_input_drift, ">= 0")
        _check(self.decoder_input_drift_hz > 0, "train.decoder_input_drift_hz",
               self.decoder_input_drift_hz, "> 0")
        _check(0 <= self.decoder_self_inputs <= 1, "train.decoder_self_inputs",
               self.decoder_self_inputs, "in [0, 1]")
        _check(self.content_loss_weight >= 0, "train.content_loss_weight",
               self.content_loss_weight, ">= 0")
        _check(0 <= self.splice_fraction <= 1, "train.splice_fraction", self.splice_fraction,
               "in [0, 1]")
        _check(self.decoder_mask_span >= 1, "train.decoder_mask_span", self.decoder_mask_span,
               ">= 1")
        _check(self.decoder_mask_steps >= 0, "train.decoder_mask_steps",
               self.decoder_mask_steps, ">= 0")
        _check(0 < self.aug_min_fraction <= self.aug_max_fraction <= 1, "train.aug_min_fraction",
               (self.aug_min_fraction, self.aug_max_fraction),
               "0 < aug_min_fraction <= aug_max_fraction <= 1")
        _check(self.steps_per_epoch >= 1, "train.steps_per_epoch", self.steps_per_epoch, ">= 1")
        _check(self.max_epochs >= 1, "train.max_epochs", self.max_epochs, ">= 1")
        _check(self.max_minutes >= 0, "train.max_minutes", self.max_minutes, ">= 0")
        _check(self.eval_segments >= 2, "train.eval_segments", self.eval_segments, ">= 2")
        _check(self.indicator_seconds >= 0, "train.indicator_seconds", self.indicator_seconds,
               ">= 0")

    def finished(self, epoch: int, elapsed_seconds: float) -> bool:
        """Whether a run that has done `epoch` epochs in `elapsed_seconds` of training steps
        is over (max_epochs reached or the max_minutes budget spent)."""
        budget = self.max_minutes * 60
        return epoch >= self.max_epochs or bool(budget and elapsed_seconds >= budget)

    def progress(self, step: int, elapsed_seconds: float) -> float:
        """The spent share of the run's budget, in [0, 1]: training time against max_minutes
        if set, else steps against max_epochs' steps."""
        if self.max_minutes:
            return min(1.0, elapsed_seconds / (self.max_minutes * 60))
        return min(1.0, step / (self.max_epochs * self.steps_per_epoch))


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        _check_types(self, "")
        _check(self.data.segment_samples % self.model.encoder.pool == 0, "data.segment_samples",
               self.data.segment_samples,
               f"a multiple of model.encoder.pool={self.model.encoder.pool}")
        _check(self.train.content_loss_weight == 0 or self.model.content_head,
               "train.content_loss_weight", self.train.content_loss_weight,
               "0 unless model.content_head is true (the loss trains that head)")

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Rebuild a config saved by `to_dict` (checkpoints), upgrading old versions first."""
        d = upgrade_config_dict(d)
        return cls(
            data=_build(DataConfig, d["data"], "data"),
            model=ModelConfig(
                domains=tuple(d["model"]["domains"]),
                encoder=_build(EncoderConfig, d["model"]["encoder"], "model.encoder"),
                decoder=_build(DecoderConfig, d["model"]["decoder"], "model.decoder"),
                confusion=_build(ConfusionConfig, d["model"]["confusion"], "model.confusion"),
                classes=d["model"]["classes"],
                content_head=d["model"].get("content_head", False),
                pre_emphasis=d["model"].get("pre_emphasis", 0.0),
            ),
            train=_build(TrainConfig, d["train"], "train"),
        )


def _build(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"config section {where}: unknown fields {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def upgrade_config_dict(d: dict) -> dict:
    """Bring a saved config dict to CONFIG_VERSION; the one place old keys are renamed."""
    version = d.get("version", 1)
    if version > CONFIG_VERSION:
        raise ValueError(f"config version {version}: this umtune reads versions up to "
                         f"{CONFIG_VERSION}; upgrade umtune")
    d = {k: v for k, v in d.items() if k != "version"}
    if version < 2:  # the augmented stretch was in seconds, clipped to the segment
        train, data = dict(d["train"]), d["data"]
        segment_seconds = data["segment_samples"] / data["sample_rate"]
        for end in ("min", "max"):
            seconds = train.pop(f"aug_{end}_seconds", None)
            if seconds is not None:
                train[f"aug_{end}_fraction"] = min(1.0, seconds / segment_seconds)
        d["train"] = train
    return d


def replace_path(cfg: RunConfig, dotted: str, value: Any) -> RunConfig:
    """`dataclasses.replace` along a dotted field path, e.g. ("train.lr", 3e-4)."""
    return _replace(cfg, dotted.split("."), value, done="")


def _replace(cfg: Any, parts: list[str], value: Any, done: str) -> Any:
    head, rest, where = parts[0], parts[1:], f"{done}{parts[0]}"
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        raise ValueError(f"unknown config field {done + '.'.join(parts)!r} (in "
                         f"{type(cfg).__name__}: {', '.join(sorted(names))})")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config field {done + '.'.join(parts)!r}: {where} is a "
                             "field, not a section")
        return dataclasses.replace(cfg, **{head: _replace(current, rest, value, f"{where}.")})
    if dataclasses.is_dataclass(current):
        example = dataclasses.fields(current)[0].name
        raise ValueError(f"config section {where}={value!r}: expected one of its fields, e.g. "
                         f"{where}.{example}=VALUE")
    return dataclasses.replace(cfg, **{head: _coerce(value, current, where)})


def _coerce(value: Any, current: Any, name: str) -> Any:
    """Give `value` the type of the field's current value where no information is lost: numbers
    written as text, an int for a float field, a whole float (2.0) for an int field, "true" or
    "false" for a bool field. Anything else is left for `__post_init__` to refuse by name."""
    if isinstance(value, numbers.Number) and hasattr(value, "item"):
        value = value.item()  # numpy scalars (Tune's and pandas' samples)
    if isinstance(current, bool) or current is None:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    if isinstance(current, str) and isinstance(value, (int, float)) and not isinstance(value,
                                                                                       bool):
        return str(value)  # e.g. data.path=2024
    if isinstance(current, (int, float)) and isinstance(value, str):
        try:
            value = float(value) if isinstance(current, float) or not value.strip().isdigit() \
                else int(value)
        except ValueError:
            kind = "a number" if isinstance(current, float) else "an integer"
            raise ValueError(f"config field {name}={value!r}: expected {kind}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def load_config_file(path: str | Path) -> RunConfig:
    """A config from YAML or JSON: a whole saved config (any run's config.json, or what
    `umtune config show` prints: it has a `version`), or some sections' fields over a preset
    (`preset: cpu`, default tiny), e.g. `{preset: cpu, train: {lr: 2.0e-4}}`."""
    from umtune import strict_yaml

    path = Path(path)
    try:
        d = strict_yaml.load(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path}: not readable ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path}: expected a mapping of sections (data, model, "
                         "train), or a `preset` and some sections")
    try:
        if "version" in d:
            return RunConfig.from_dict(d)
        base = preset(str(d.pop("preset", "tiny"))).to_dict()
        return RunConfig.from_dict(_merged(base, d, ""))
    except (KeyError, TypeError, ValueError) as e:
        message = e.args[0] if isinstance(e, ValueError) else f"missing or odd field {e}"
        raise ValueError(f"config file {path}: {message}") from None


def _merged(base: dict, update: dict, where: str) -> dict:
    unknown = set(update) - set(base)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} in {where or 'the top level'}")
    return {k: _merged(v, update[k], f"{where}.{k}" if where else k)
            if isinstance(v, dict) and isinstance(update.get(k), dict) else update.get(k, v)
            for k, v in base.items()}


def overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply "dotted.field=value" strings (values parsed as YAML: numbers, lists, strings; only
    `true` and `false` are booleans, so `yes` or `on` stay text and a bool field refuses them)."""
    from umtune import strict_yaml

    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r}: expected FIELD=VALUE, e.g. train.lr=3e-4")
        value = strict_yaml.load(text, f"override {item!r}: the value")
        if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
            value = text.strip()
        cfg = replace_path(cfg, key.strip(), tuple(value) if isinstance(value, list) else value)
    return cfg


def paper(domains: tuple[str, ...] = DEFAULT_DOMAINS) -> RunConfig:
    """The paper's sizes: encoder 3x10 layers, 128 ch, latent 64, pool 800; decoders 4x14."""
    return RunConfig(
        data=DataConfig(segment_samples=12000, batch_per_domain=2),
        model=ModelConfig(domains=tuple(domains)),
        train=TrainConfig(precision="auto"),
    )


def tiny(domains: tuple[str, ...] = DEFAULT_DOMAINS) -> RunConfig:
    """Small enough that 10 minutes on 2 CPU cores visibly lowers the held-out loss."""
    return RunConfig(
        data=DataConfig(segment_samples=4000, batch_per_domain=2),
        model=ModelConfig(
            domains=tuple(domains),
            encoder=EncoderConfig(blocks=2, layers_per_block=6, channels=32, latent_channels=16,
                                  pool=200),
            decoder=DecoderConfig(blocks=2, layers_per_block=8, residual_channels=32,
                                  gate_channels=64, skip_channels=32),
            confusion=ConfusionConfig(layers=3, channels=32, dropout=0.0),
        ),
        train=TrainConfig(steps_per_epoch=25, eval_segments=4, precision="auto"),
    )


def cpu(domains: tuple[str, ...] = DEFAULT_DOMAINS) -> RunConfig:
    """The translation recipe for 2 CPU cores: `tiny` at 8 kHz with decoders twice as wide, a
    one-block encoder, the content loss, a decoder mask held at 25% for the whole run (annealed
    away, the decoders stopped using the latent more), a moving average of the weights for
    generation, lambda 0.1 (at 1e-2 the held-out confusion accuracy climbs), a learning
    rate of 2e-3 (twice the paper's: an hour is ~3,000 steps, not 100k+) and a slow drift on
    the decoders' past (free-running, their samples wander below ~120 Hz; trained on pasts
    that drift, they pull back). Each choice won a probe against a baseline (docs/results.md)."""
    base = tiny(domains)
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, sample_rate=8000),
        model=dataclasses.replace(
            base.model,
            content_head=True,
            encoder=dataclasses.replace(base.model.encoder, blocks=1, layers_per_block=11),
            decoder=dataclasses.replace(base.model.decoder, residual_channels=64,
                                        gate_channels=128, skip_channels=64)),
        train=dataclasses.replace(base.train, steps_per_epoch=100, lr=2e-3, ema_decay=0.999,
                                  confusion_lambda=0.1,
                                  content_loss_weight=1.0, decoder_mask_fraction=0.25,
                                  decoder_mask_span=512, decoder_input_drift=0.03),
    )


PRESETS = {"paper": paper, "tiny": tiny, "cpu": cpu}


def preset(name: str, domains: tuple[str, ...] = DEFAULT_DOMAINS) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name](tuple(domains))
