"""The Ray adapter: one training run as a Ray Train `TorchTrainer` (DDP over N workers).

The loop in `loop.py` does the training; this module only connects it to Ray Train: each worker
rebuilds the config from a plain dict, resumes from `ray.train.get_checkpoint()` if Train hands
it one, wraps the autoencoder and the confusion net with `ray.train.torch.prepare_model`
(DistributedDataParallel: gloo on CPU, nccl on GPU) and reports every epoch with
`ray.train.report` (rank 0 attaches the checkpoint). Nothing else in the package touches Ray
Train, so when its reporting API changes again, this file is the one to change.

A run lives at `<storage>/<name>` (Ray's checkpoint_manager_snapshot.json and one
`epoch_NNNNNN/` checkpoint per kept epoch). Running again with the same storage and name
continues from the latest checkpoint, which is how both `--resume` and worker-failure restarts
work. Each checkpoint also holds `metrics.jsonl`, the run's whole history up to that epoch
(kept checkpoints are pruned, the history is not).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from umtune.config import RunConfig
from umtune.storage import SHARED_SCHEMES, local_path
from umtune.trainable import loop
from umtune.trainable.checkpoint import TrainingState, format_metrics, load_checkpoint
from umtune.trainable.model import WaveNetDecoder, generation_flops_per_sample

HISTORY_FILE = "metrics.jsonl"
HELDOUT_METRIC = "heldout_ce"  # what schedulers (ASHA) and the default objective minimise
COST_METRIC = "generation_flops_per_sample"  # the cost objective of multi-objective sweeps
DIVERGED_KEY = "diverged"  # in a trial's last report: why its loss stopped being finite
DIVERGED_FILE = "diverged.txt"  # in a run folder: the same, for the driver
EVAL_PREFIX = "eval/"  # translation-quality metrics in a trial's final report
TRAIN_RUNS_DIR = "train"  # in a sweep: where each trial's Ray Train run lives
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # written by Ray Train in every run folder


def train_loop_per_worker(config: dict) -> None:
    """The function every Ray Train worker runs: `loop.train` with Ray's context and report."""
    cfg = RunConfig.from_dict(config["run"])
    ctx = ray.train.get_context()
    # Ray sets OMP_NUM_THREADS to floor(CPUs); a sweep's workers ask for a hair under a whole
    # number of CPUs (umtune.sweep._cpus_per_worker), so round instead.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, round(cpus)))
    if ctx.get_world_rank() == 0:  # a resumed run starts afresh (e.g. with a lower lr)
        _delete(f"{config['run_path']}/{DIVERGED_FILE}")
    cost = generation_flops_per_sample(WaveNetDecoder(cfg.model.decoder,
                                                      cfg.model.encoder.latent_channels,
                                                      cfg.model.classes))
    device = ray.train.torch.get_device()
    restored = ray.train.get_checkpoint()
    with restored.as_directory() if restored else contextlib.nullcontext() as resume:
        history = read_history(resume) if resume else []
        start_epoch = history[-1]["epoch"] if history else 0

        def report(metrics: dict, checkpoint_dir: Path | None) -> None:
            metrics = {**metrics, "start_epoch": start_epoch, "world_size": ctx.get_world_size(),
                       "gpu": device.type == "cuda", "cpus_per_worker": cpus,
                       "threads": torch.get_num_threads(), COST_METRIC: cost}
            checkpoint = None
            if checkpoint_dir is not None:
                if config.get("evaluate") and _is_last_epoch(cfg, metrics):
                    metrics.update(_evaluate(checkpoint_dir, cfg, config["evaluate"],
                                             config["run_path"]))
                history.append(metrics)
                (checkpoint_dir / HISTORY_FILE).write_text(
                    "".join(json.dumps(m) + "\n" for m in history))
                checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
                print(format_metrics(metrics), flush=True)
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"epoch_{metrics['epoch']:06d}")

        try:
            loop.train(cfg, report=report, resume=Path(resume) if resume else None,
                       device=device, wrap=ray.train.torch.prepare_model,
                       rank=ctx.get_world_rank(), world_size=ctx.get_world_size(),
                       indicators=config.get("indicators"))
        except loop.DivergenceError as e:
            # Every rank gets here at the same step (the finiteness check is collective).
            # Ending normally, not raising, keeps Train from restarting a run that would only
            # diverge again; `fit` and `tune_trial` find the reason in the run folder and fail.
            if ctx.get_world_rank() == 0:
                _write_text(f"{config['run_path']}/{DIVERGED_FILE}", str(e))
            ray.train.report({"epoch": e.epoch, "step": e.step, HELDOUT_METRIC: math.inf,
                              DIVERGED_KEY: str(e)})


def _is_last_epoch(cfg: RunConfig, metrics: dict) -> bool:
    budget = cfg.train.max_minutes * 60
    return metrics["epoch"] >= cfg.train.max_epochs or bool(budget and
                                                             metrics["elapsed_s"] >= budget)


def _evaluate(checkpoint_dir: Path, cfg: RunConfig, options: dict, run_path: str) -> dict:
    """Translation-quality metrics of the final checkpoint, as `eval/<name>` report keys.

    The files (metrics.json, audio gallery) go to `<run>/evaluation/` when the run lives on a
    file system, else into the checkpoint, which Train uploads with it.
    """
    from umtune.analysis.evaluate import evaluate_checkpoint

    local = local_path(run_path)  # file:// is a shared file system: a plain path on every node
    out_dir = (checkpoint_dir if local is None else local) / "evaluation"
    result = evaluate_checkpoint(checkpoint_dir, cfg.data.path, out_dir=out_dir,
                                 clips=options["clips"], seconds=options["seconds"],
                                 seeds=range(options.get("seeds", 1)))
    return {f"{EVAL_PREFIX}{k}": v for k, v in result["summary"].items() if v is not None}


def trainer(cfg: RunConfig, *, workers: int, storage: str, name: str, use_gpu: bool = False,
            cpus_per_worker: float | None = None, max_failures: int = 3,
            keep_checkpoints: int | None = 3, callbacks: list | None = None,
            evaluate: dict | None = None,
            indicators: loop.Indicators | None = None) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer for one run at `<storage>/<name>` (not started; call `.fit()`).

    Args:
        cfg: the run config; `data.batch_per_domain` is the global batch, split over workers.
        workers: training processes, one per GPU with `use_gpu`.
        storage: a local directory, a shared mount as file:///path, or a cloud URI (s3://...).
        name: the run's folder under `storage`; an existing run of that name is continued.
        cpus_per_worker: CPUs (and torch threads) each worker gets; Ray's default is 1.
        max_failures: worker-group restarts (from the latest checkpoint) before giving up.
        keep_checkpoints: newest checkpoints to keep (None: all; the history is kept anyway).
        callbacks: Ray Train callbacks, e.g. Tune's TuneReportCallback inside a Tune trial.
        evaluate: {"clips": N, "seconds": S, "seeds": K}: score the final checkpoint's
            translations (umtune.analysis), averaged over K seeds (default 1), and add them
            to the last report; None: don't.
        indicators: `loop.train`'s per-epoch callback (pickled to every worker).
    """
    if cfg.data.batch_per_domain % workers:
        raise ValueError(f"data.batch_per_domain={cfg.data.batch_per_domain} must be divisible "
                         f"by the number of workers ({workers})")
    if "://" not in cfg.data.path:  # workers run in their own directory
        cfg = replace(cfg, data=replace(cfg.data, path=str(Path(cfg.data.path).resolve())))
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_path": f"{storage}/{name}",
                           "evaluate": evaluate, "indicators": indicators},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker} if cpus_per_worker else None),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage, callbacks=callbacks,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # one line per epoch
            # controller_failure_limit defaults to retrying forever; a broken run must stop.
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=3)))


def fit(cfg: RunConfig, *, workers: int, storage: str | Path = "runs", name: str,
        use_gpu: bool = False, address: str | None = None, max_failures: int = 3,
        keep_checkpoints: int | None = 3, resume: bool = False,
        cpus_per_worker: float | None = None,
        indicators: loop.Indicators | None = None) -> ray.train.Result:
    """Run (or with `resume`, continue) the run `<storage>/<name>` on Ray and wait for it.

    Starts a local Ray unless `address` names a cluster to join (or Ray is already running).
    """
    connect(address)
    storage = check_storage(storage, alive_nodes())
    exists = run_exists(storage, name)
    if resume and not exists:
        raise FileNotFoundError(f"{storage}/{name}: no Ray Train run to resume there")
    if exists and not resume:
        raise FileExistsError(f"{storage}/{name} already holds a run: resume it (--resume) or "
                              "choose another name")
    result = trainer(cfg, workers=workers, storage=storage, name=name, use_gpu=use_gpu,
                     cpus_per_worker=cpus_per_worker, max_failures=max_failures,
                     keep_checkpoints=keep_checkpoints, indicators=indicators).fit()
    raise_if_diverged(f"{storage}/{name}")
    return result


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local Ray; nothing if Ray is running.

    Ray 2.60 clusters require token auth; a client sends ~/.ray/auth_token when
    RAY_AUTH_MODE=token is set, or by itself for `--address auto` (a cluster on this node).
    """
    if ray.is_initialized():
        return
    ray.init(address=address) if address else ray.init()


def alive_nodes() -> int:
    return sum(node["Alive"] for node in ray.nodes())


# The trial function only waits on its Train run: it asks for no CPU (and 1 MiB of memory, as Tune
# refuses an empty request), so a trial of W workers x c CPUs needs exactly W x c CPUs, and on a
# cluster of c-CPU nodes each worker can take a whole node (a driver's CPU share would not fit).
TRIAL_RESOURCES = {"cpu": 0, "memory": 2**20}
TRIAL_DEFAULTS = {"workers": 1, "gpu": False, "cpus_per_worker": None, "max_failures": 1,
                  "eval_clips": 1, "eval_seconds": 1.0, "eval_seeds": 1,  # clips 0: none
                  "storage": str(Path("~/ray_results/umtune-train").expanduser())}


def tune_trial(config: dict) -> None:
    """The Ray Tune trainable: one trial = one Ray Train run of the trial's config.

    `config` is what `umtune.search_spaces.get` returns, sampled by Tune, plus optionally
    `config["trial"]`, the trial's resources and evaluation (keys of TRIAL_DEFAULTS: workers,
    gpu, cpus_per_worker, max_failures, storage, eval_clips, eval_seconds, eval_seeds). The
    Train run is named after the trial id, so after `Tuner.restore` an unfinished trial
    continues its run from its latest checkpoint. Train's per-epoch reports reach Tune through
    TuneReportCallback, the last one with the final checkpoint's translation-quality metrics
    (`eval/...`); a diverged run fails the trial with the reason.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from umtune.analysis.indicators import LeadingIndicators
    from umtune.search_spaces import trial_config

    cfg = trial_config(config)
    opts = {**TRIAL_DEFAULTS, **config.get("trial", {})}
    storage = check_storage(opts["storage"], alive_nodes())
    name = f"train-{ray.tune.get_context().get_trial_id()}"
    trainer(cfg, workers=opts["workers"], storage=storage, name=name, use_gpu=opts["gpu"],
            cpus_per_worker=opts["cpus_per_worker"], max_failures=opts["max_failures"],
            callbacks=[TuneReportCallback()], indicators=LeadingIndicators(cfg),
            evaluate={"clips": opts["eval_clips"], "seconds": opts["eval_seconds"],
                      "seeds": opts["eval_seeds"]}
            if opts["eval_clips"] else None).fit()
    raise_if_diverged(f"{storage}/{name}")


def raise_if_diverged(run_path: str) -> None:
    """Raise the DivergenceError that ended the run at `run_path`, if one did."""
    reason = _read_text(f"{run_path}/{DIVERGED_FILE}")
    if reason is not None:
        raise loop.DivergenceError(reason)


def _write_text(uri: str, text: str) -> None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _read_text(uri: str) -> str | None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


def _delete(uri: str) -> None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_file(path)


def check_storage(storage: str | Path, alive_nodes: int) -> str:
    """The storage path Ray Train should use, refusing node-local disks on multi-node clusters.

    A plain path is taken to be on this node's disk: fine on one node (made absolute), an error
    on a cluster of several, whose workers could not write their checkpoints there. Shared
    storage is named by a URI: s3://, gs://, ... or file:///path for a filesystem mounted at
    the same path on every node (NFS, EFS, Lustre).
    """
    storage = str(storage)
    if storage.startswith(SHARED_SCHEMES):
        return storage
    if "://" in storage:
        raise ValueError(f"storage {storage!r}: unknown scheme; expected a local path or one of "
                         f"{', '.join(SHARED_SCHEMES)}")
    if alive_nodes > 1:
        raise ValueError(
            f"storage {storage!r} is a directory on this node's disk, but the Ray cluster has "
            f"{alive_nodes} nodes, whose workers cannot write checkpoints there. Use a cloud URI "
            "(s3://bucket/runs, gs://bucket/runs) or a filesystem mounted at the same path on "
            "every node, written as file:///mnt/shared/runs")
    return str(Path(storage).resolve())


def run_exists(storage: str, name: str) -> bool:
    """Whether `<storage>/<name>` holds a Ray Train run (its checkpoint snapshot file)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(storage)
    return fs.get_file_info(f"{path}/{name}/{SNAPSHOT_FILE}").type != pyarrow.fs.FileType.NotFound


def split_run_dir(run_dir: str | Path) -> tuple[str, str]:
    """`<storage>/<name>` -> (storage, name), for local paths and URIs alike."""
    text = str(run_dir).rstrip("/")
    if "://" not in text:
        path = Path(text).resolve()
        return str(path.parent), path.name
    storage, _, name = text.rpartition("/")
    if storage.endswith(":/"):
        raise ValueError(f"run directory {run_dir!r}: expected SCHEME://STORAGE/NAME")
    return storage, name


def read_history(checkpoint_dir: str | Path) -> list[dict]:
    """The metrics of every epoch up to the checkpoint's, one dict each, in order."""
    file = Path(checkpoint_dir) / HISTORY_FILE
    return [json.loads(line) for line in file.read_text().splitlines() if line]


def latest(run_dir: str | Path) -> tuple[TrainingState, list[dict]]:
    """The latest checkpoint of a Ray Train run (state and config) and its metrics history."""
    if not run_exists(*split_run_dir(run_dir)):
        raise FileNotFoundError(f"{run_dir}: no Ray Train run there (no {SNAPSHOT_FILE})")
    checkpoint = ray.train.Result.from_path(str(run_dir)).checkpoint
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: the run has no checkpoint yet")
    with checkpoint.as_directory() as d:
        return load_checkpoint(d), read_history(d)
