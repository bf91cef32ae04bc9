"""How a sweep samples, schedules and sizes its trials: `SweepOptions`, saved in sweep.json."""

from __future__ import annotations

from dataclasses import dataclass

from umtune.analysis.evaluate import EvalOptions
from umtune.layout import OBJECTIVES
from umtune.sweep.trial import TrialOptions
from umtune.trainable.ray_train import Resources

SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "hyperband", "median", "pbt", "pb2", "none")
POPULATION = ("pbt", "pb2")  # schedulers that move weights between trials


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep samples, schedules and sizes its trials (saved in sweep.json)."""

    space: str | dict  # a built-in space's name or a YAML space's spec
    samples: int = 1  # trials (grid: repetitions of the grid)
    search: str = "optuna"
    scheduler: str = "asha"
    objectives: tuple[str, ...] = ("quality",)
    trial_workers: int = 1
    gpu: bool = False
    cpus_per_worker: float | None = None  # default 1 (see worker_cpus)
    max_concurrent: int | None = None  # default: as many trials as the cluster's resources fit
    seed: int = 0
    grace_epochs: int = 1  # ASHA: epochs every trial runs before it can be stopped
    train_failures: int = 1  # worker-group restarts within one trial
    eval_clips: int = 1  # held-out clips per domain pair scored at each trial's end (0: none)
    eval_seconds: float = 1.0
    eval_seeds: int = 1  # evaluation seeds averaged (other clips, other samples)
    log: tuple[str, ...] = ()  # live trackers, through Tune's callbacks (trainable/tracking.py)
    enqueue_base: bool = False  # Optuna's first trial is the base config itself

    def __post_init__(self):
        checks = [(self.search in SEARCHES, "search", f"one of {', '.join(SEARCHES)}"),
                  (self.scheduler in SCHEDULERS, "scheduler", f"one of {', '.join(SCHEDULERS)}"),
                  (len(self.objectives) >= 1 and set(self.objectives) <= set(OBJECTIVES),
                   "objectives", f"some of {', '.join(OBJECTIVES)}"),
                  (self.samples >= 1, "samples", ">= 1"),
                  (self.eval_seeds >= 1, "eval_seeds", ">= 1"),
                  (self.trial_workers >= 1, "trial_workers", ">= 1"),
                  (len(self.objectives) == 1 or self.search == "optuna", "objectives",
                   "a single objective unless search is optuna (multi-objective sampler)"),
                  (not self.population or self.trial_workers == 1, "trial_workers",
                   f"1 with --scheduler {self.scheduler} (a multi-worker trial's Ray Train run "
                   "restores its own checkpoints, not another trial's)"),
                  (not self.population or self.search != "optuna", "search",
                   f"random or grid with --scheduler {self.scheduler} (it changes configs "
                   "Optuna suggested)"),
                  (not self.population or len(self.objectives) == 1, "objectives",
                   f"a single objective with --scheduler {self.scheduler}"),
                  (not self.enqueue_base or self.search == "optuna", "enqueue_base",
                   "false unless search is optuna (it enqueues the base config as its first "
                   "trial)")]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"sweep option {name}={getattr(self, name)!r}: expected "
                                 f"{expected}")

    @property
    def population(self) -> bool:
        """Population-based training: trials take each other's weights."""
        return self.scheduler in POPULATION

    @property
    def worker_cpus(self) -> float:
        """CPUs (= torch threads) each Train worker requests; the trial driver takes none."""
        return self.cpus_per_worker or 1.0

    def metrics(self) -> tuple[list[str], list[str]]:
        """The objectives' reported metrics and their directions ("min"/"max")."""
        metric, mode = zip(*(OBJECTIVES[o] for o in self.objectives), strict=True)
        return list(metric), list(mode)

    def trial_options(self, train_storage: str) -> TrialOptions:
        """What every trial of the sweep runs with, its Train runs under `train_storage`."""
        return TrialOptions(
            resources=Resources(workers=self.trial_workers, gpu=self.gpu,
                                cpus_per_worker=self.worker_cpus,
                                max_failures=self.train_failures),
            evaluation=EvalOptions(clips=self.eval_clips, seconds=self.eval_seconds,
                                   seeds=self.eval_seeds) if self.eval_clips else None,
            storage=train_storage)
