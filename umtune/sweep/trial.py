"""The Ray Tune trial: one sampled config = one training run, then its end-of-run evaluation.

`tune_trial` is the trainable that `umtune sweep`, `tune.run` and `Tuner` run (with
`trial_resources`). Every trial has a run folder of the one shape, `<storage>/train-<trial id>`
(umtune/layout.py). A one-worker trial trains in its own process, keeps each checkpoint there
and reports it to Tune (whose copy restores and population-based training use); a
multi-worker trial's run folder is a Ray Train run, whose reports reach Tune through
TuneReportCallback. Either way, after `Tuner.restore` an unfinished trial
continues from its latest checkpoint, the last report carries the final checkpoint's
translation-quality metrics (`eval/...`), and a diverged run fails the trial with the reason.

The path of a sampled hyperparameter, e.g. `train.confusion_lambda`, is straight: the search
space names it and samples it (umtune/search_spaces), `trial_config` turns the sample back into
the frozen RunConfig, the trial (or its Train workers) trains on that config, and
`loop.Trainer` reads `cfg.train.confusion_lambda` in its loss.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from umtune import storage
from umtune.analysis.evaluate import EvalOptions
from umtune.config import RunConfig
from umtune.layout import (
    EPOCH_TRIAL_KEY,
    EVAL_PREFIX,
    EVALUATION_DIR,
    SCHEDULE_PREFIX,
    SPACE_KEY,
    TRIAL_KEY,
    TRIAL_TRAINER,
    train_run_name,
)
from umtune.layout import trial_name as _trial_folder
from umtune.search_spaces import trial_config
from umtune.trainable.ray_train import Resources
from umtune.trainable.run_folder import FolderKeep, RunFolder


@dataclass(frozen=True)
class TrialOptions:
    """A trial's resources, evaluation and storage. In the trainable's config they travel as
    the flat dict `config["trial"]` (`to_dict`: workers, gpu, cpus_per_worker, max_failures,
    eval_clips, eval_seconds, eval_seeds, storage), each key optional."""

    resources: Resources = Resources(max_failures=1)
    evaluation: EvalOptions | None = EvalOptions(clips=1)  # None: no evaluation
    storage: str = field(default_factory=lambda: str(Path("~/ray_results/umtune-train")
                                                     .expanduser()))

    def to_dict(self) -> dict:
        flat = {**asdict(self.resources), "storage": self.storage, "eval_clips": 0}
        if self.evaluation:
            flat.update(eval_clips=self.evaluation.clips, eval_seconds=self.evaluation.seconds,
                        eval_seeds=self.evaluation.seeds)
        return flat

    @classmethod
    def from_dict(cls, flat: dict) -> TrialOptions:
        default = cls()
        resources = {f.name for f in fields(Resources)}
        clips = flat.get("eval_clips", default.evaluation.clips)
        return cls(resources=replace(default.resources,
                                     **{k: v for k, v in flat.items() if k in resources}),
                   evaluation=EvalOptions(clips=clips,
                                          seconds=flat.get("eval_seconds", EvalOptions.seconds),
                                          seeds=flat.get("eval_seeds", EvalOptions.seeds))
                   if clips else None,
                   storage=str(flat.get("storage", default.storage)))


@dataclass(frozen=True)
class FinalEvaluation:
    """The run's `final_metrics`: the final checkpoint's translations scored, as `eval/<name>`
    report keys. The files (metrics.json, audio gallery) go to `<run>/evaluation/` when the
    run lives on a file system, else into the checkpoint, which is uploaded with it."""

    options: EvalOptions
    run_path: str

    def __call__(self, checkpoint_dir: Path, cfg: RunConfig) -> dict:
        from umtune.analysis.evaluate import evaluate_checkpoint

        local = storage.local_path(self.run_path)  # file:// is a shared file system
        out_dir = (checkpoint_dir if local is None else local) / EVALUATION_DIR
        result = evaluate_checkpoint(checkpoint_dir, cfg.data.path, out_dir=out_dir,
                                     options=self.options)
        return {f"{EVAL_PREFIX}{k}": v for k, v in result["summary"].items() if v is not None}


def trial_resources(config: dict):
    """What a trial asks of Tune (`tune.with_resources(tune_trial, trial_resources)`).

    A one-worker trial trains in its own process and asks for that worker's CPUs (and GPU). A
    multi-worker trial only waits on its Train run: it asks for no CPU (and 1 MiB of memory, as
    Tune refuses an empty request), so a trial of W workers x c CPUs needs exactly W x c CPUs,
    and on a cluster of c-CPU nodes each worker can take a whole node.
    """
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    r = TrialOptions.from_dict(config.get(TRIAL_KEY, {})).resources
    return resource_dict_to_pg_factory({"cpu": r.cpus_per_worker or 1, "gpu": int(r.gpu)}
                                       if r.workers == 1 else {"cpu": 0, "memory": 2**20})


def tune_trial(config: dict) -> None:
    """The Ray Tune trainable: one trial = one training run of the trial's config.

    `config` is what `umtune.search_spaces.get` returns, sampled by Tune, plus optionally
    `config["trial"]`, a dict of `TrialOptions` keys. A one-worker trial trains in this
    process, checkpointed by Tune (a restored trial continues from its latest checkpoint); a
    multi-worker trial runs a Ray Train run named after the trial, which a restored trial
    continues. Either way the run folder is `<storage>/train-<trial id>`.
    """
    import ray.tune

    from umtune.analysis.indicators import LeadingIndicators
    from umtune.trainable import ray_train

    cfg = trial_config(config)
    opts = TrialOptions.from_dict(config.get(TRIAL_KEY, {}))
    storage_path = storage.check_storage(opts.storage, ray_train.alive_nodes())
    name = train_run_name(ray.tune.get_context().get_trial_id())
    run_path = f"{storage_path}/{name}"
    indicators = LeadingIndicators(cfg)
    final = FinalEvaluation(opts.evaluation, run_path) if opts.evaluation else None
    if opts.resources.workers == 1:
        trial = _trial_folder(ray.tune.get_context().get_trial_id())
        _train_in_trial(cfg, opts.resources, run_path, indicators, final,
                        extra={EPOCH_TRIAL_KEY: trial, **schedule(config, cfg)})
    else:
        from ray.tune.integration.ray_train import TuneReportCallback

        ray_train.torch_trainer(cfg, opts.resources, storage_path=storage_path, name=name,
                                callbacks=[TuneReportCallback()], indicators=indicators,
                                final_metrics=final, trainer=TRIAL_TRAINER).fit()
    ray_train.raise_if_diverged(run_path)


def schedule(config: dict, cfg: RunConfig) -> dict:
    """The values of the space's training fields in this run, for each epoch's report: under
    population-based training they change when a trial takes another's weights."""
    from umtune.search_spaces import space

    return {f"{SCHEDULE_PREFIX}{key}": functools.reduce(getattr, key.split("."), cfg)
            for key in space(config[SPACE_KEY], cfg).mutations()}


def _train_in_trial(cfg: RunConfig, resources: Resources, run_path: str, indicators,
                    final: FinalEvaluation | None, extra: dict) -> None:
    """Train in the trial's own process, keeping the newest checkpoint in the run folder and
    reporting it to Tune: no Train controller and worker group to start (about 20 s a trial on
    2 cores). `extra`: the trial's name and schedule, in every report and so in the history
    each checkpoint carries."""
    import ray.tune
    import torch

    from umtune.trainable import ray_train

    in_folder = FolderKeep(RunFolder(run_path))

    def keep(metrics: dict, checkpoint_dir: Path | None) -> None:
        in_folder(metrics, checkpoint_dir)
        ray.tune.report(metrics, checkpoint=None if checkpoint_dir is None
                        else ray.tune.Checkpoint.from_directory(checkpoint_dir))

    cpus = ray_train.use_assigned_cpus()
    restored = ray.tune.get_checkpoint()
    with restored.as_directory() if restored else contextlib.nullcontext() as resume:
        ray_train.train_and_report(cfg, run_path=run_path,
                                   resume=Path(resume) if resume else None, keep=keep,
                                   trainer=TRIAL_TRAINER,
                                   device=torch.device("cuda" if resources.gpu else "cpu"),
                                   cpus=cpus, indicators=indicators, final_metrics=final,
                                   extra=extra)
