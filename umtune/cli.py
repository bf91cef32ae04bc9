"""The `umtune` command: parses arguments, builds configs, and calls the library.

Each subcommand's handler is a few lines that call one library function; nothing below this
module parses arguments. Every error ends as one line on stderr: bad input (a ValueError or an
OSError, which the library raises naming the file or value) with exit status 2, anything else
with status 1; `umtune --debug ...` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import time
from pathlib import Path


def _sampling_parser() -> argparse.ArgumentParser:
    """The options of `Sampling` shared by translate and evaluate (defaults: the library's)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("generation")
    g.add_argument("--chunk-seconds", type=_number,
                   help="clips are cut into chunks of this length generated side by side")
    g.add_argument("--lead-seconds", type=_number,
                   help="each chunk is entered through this much of the audio before it "
                   "(default: the decoders' receptive field; 0: chunks restart from silence)")
    g.add_argument("--temperature", type=_number,
                   help="sampling temperature: 1 samples the decoder's trained distribution, "
                   "below 1 sharpens it (fewer noisy samples, less variety)")
    g.add_argument("--floor", type=_number,
                   help="classes less probable than this are never sampled (0: none removed)")
    g.add_argument("--emit", choices=("sample", "mean"),
                   help="write the drawn samples, or each step's expected value under the "
                   "decoder's distribution (the decoder continues from its samples either way)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds generation (evaluate: also chooses the clips)")
    return p


def _sampling(a: argparse.Namespace, base):
    from dataclasses import replace

    given = {k: getattr(a, k) for k in ("chunk_seconds", "lead_seconds", "temperature", "floor",
                                        "emit", "seed")
             if getattr(a, k) is not None}
    return replace(base, **given)


def _data_chorales(a: argparse.Namespace) -> None:
    from umtune.data import ChoraleOptions, Dataset, render_chorales

    options = ChoraleOptions(domains=tuple(a.domains.split(",")), sample_rate=a.sample_rate,
                             pieces_per_domain=a.pieces, heldout_pieces=a.heldout, seed=a.seed,
                             max_piece_seconds=a.max_piece_seconds, lines=a.lines)
    path = render_chorales(a.out, options, force=a.force, soundfont=a.soundfont)
    print(Dataset.open(path).summary())


def _data_import(a: argparse.Namespace) -> None:
    from umtune.data import Dataset, import_folders

    path = import_folders(a.src, a.out, sample_rate=a.sample_rate,
                          heldout_fraction=a.heldout_fraction, seed=a.seed, force=a.force,
                          skip_bad=a.skip_bad, min_seconds=a.min_seconds)
    print(Dataset.open(path).summary())


def _data_musicnet(a: argparse.Namespace) -> None:
    from umtune.data import Dataset, import_musicnet

    path = import_musicnet(a.root, a.out, domains=a.domains, sample_rate=a.sample_rate,
                           heldout_fraction=a.heldout_fraction, seed=a.seed, force=a.force,
                           skip_bad=a.skip_bad, min_seconds=a.min_seconds)
    print(Dataset.open(path).summary())


def _data_instruments(a: argparse.Namespace) -> None:
    from umtune.data import INSTRUMENTS, UNSEEN_DOMAIN

    for name, program in INSTRUMENTS.items():
        print(f"{name:12} GM program {program:3}" + ("  (unseen domain)" if name == UNSEEN_DOMAIN
                                                    else ""))


def _data_summary(a: argparse.Namespace) -> None:
    from umtune.data import Dataset

    print(Dataset.open(a.path).summary())


def _train(a: argparse.Namespace) -> None:
    from umtune.analysis.indicators import LeadingIndicators
    from umtune.config import replace_path
    from umtune.trainable.runs import (
        RayRequest,
        plan,
        resumed_config,
        saved_config,
        train_run,
    )
    from umtune.trainable.tracking import Tracking, parse_log

    request = RayRequest(workers=a.workers, gpu=a.gpu or None, cpus_per_worker=a.cpus_per_worker,
                         address=a.address, storage=a.storage, max_failures=a.max_failures,
                         adopt=a.adopt)
    if a.resume:
        saved = saved_config(a.resume, request)
        cfg = _with_sets(a, saved, minutes=a.minutes)
        if a.data:  # the dataset may have moved; the trainer checks it serves the run
            cfg = replace_path(cfg, "data.path", str(Path(a.data).absolute()))
        cfg = resumed_config(saved, cfg)
    else:
        cfg = _with_sets(a, _new_config(a), minutes=a.minutes)
    if a.dry_run:
        _print_config(cfg)
        print(f"dry run: {plan(cfg, a.resume or a.out, resume=bool(a.resume), request=request)}"
              "; nothing was written")
        return
    print(train_run(cfg, a.resume or a.out, resume=bool(a.resume), request=request,
                    indicators=LeadingIndicators(cfg), keep_every_minutes=a.keep_every or 0.0,
                    log=Tracking(parse_log(a.log), a.log_audio_seconds)))


def _sweep(a: argparse.Namespace) -> int:
    from umtune.search_spaces import space
    from umtune.sweep import SweepOptions, resume_sweep, run_sweep, summary
    from umtune.trainable.tracking import parse_log

    if a.resume:
        result = resume_sweep(a.resume, address=a.address, dashboard=a.dashboard)
    else:
        base = _with_sets(a, _new_config(a), minutes=a.minutes_per_trial)
        varied = space(a.space, base)
        clash = [item for item in a.set if item.partition("=")[0].strip() in varied.keys]
        if clash:
            field = clash[0].partition("=")[0].strip()
            raise ValueError(f"--set {clash[0]}: the space {varied.name!r} varies {field} too, "
                             "and would win; expected it set in one place (drop the --set, or "
                             "the parameter from the space)")
        search = a.search or ("grid" if varied.default_search == "grid" else
                              "random" if a.scheduler in ("pbt", "pb2") else "optuna")
        opts = SweepOptions(space=a.space, samples=a.samples, search=search,
                            scheduler=a.scheduler, objectives=tuple(a.objective.split(",")),
                            trial_workers=a.trial_workers, gpu=a.gpu,
                            cpus_per_worker=a.cpus_per_worker, max_concurrent=a.max_concurrent,
                            seed=a.seed, eval_clips=a.eval_clips, eval_seconds=a.eval_seconds,
                            eval_seeds=a.eval_seeds,
                            grace_epochs=a.grace_epochs, log=parse_log(a.log),
                            enqueue_base=a.enqueue_base)
        name = a.name or f"{Path(a.space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if a.dry_run:
            _print_config(base)
            print(f"{varied.describe()}\ndry run: would run {opts.samples} sample(s) of this "
                  f"space ({opts.search} search, {opts.scheduler} scheduler, "
                  f"{opts.trial_workers} Train worker(s) per trial) into {a.storage}/{name}; "
                  "nothing was written")
            return 0
        result = run_sweep(base, opts, storage=a.storage, name=name, address=a.address,
                           dashboard=a.dashboard)
    print(summary(result))
    return 1 if result.failed else 0


def _with_sets(a: argparse.Namespace, cfg, minutes: float | None):
    """`cfg` with the --set overrides and, if given, a training budget in minutes."""
    from umtune.config import overrides

    return overrides(cfg, [*a.set, *([f"train.max_minutes={minutes}"] if minutes is not None
                                     else [])])


SWEEP_DATA = "data/lines8k"
DEFAULT_PRESET = "tiny"


def _new_config(a: argparse.Namespace, default_data: str | None = SWEEP_DATA):
    """The config of a new run: a --config file as written (pointed at --data if given), or the
    preset sized for the dataset's domains and sample rate (presets count in samples) and
    pointed at it; without --data, `default_data` (a sweep's: what `make demo` renders; the
    option object is shared with train, so the default is applied here, not on the parser), or
    with None the preset as it is."""
    from umtune.config import load_config_file, preset, replace_path
    from umtune.data import Dataset

    if a.config:
        cfg = load_config_file(a.config)
        data = Path(a.data or cfg.data.path)
    elif a.data or default_data:
        data = Path(a.data or default_data)
        dataset = Dataset.open(data)
        cfg = replace_path(preset(a.preset or DEFAULT_PRESET, dataset.domains),
                           "data.sample_rate", dataset.sample_rate)
    else:
        cfg = preset(a.preset or DEFAULT_PRESET)
        data = Path(cfg.data.path)
    return replace_path(cfg, "data.path", str(data.absolute()))  # a resume may run elsewhere


def _config_show(a: argparse.Namespace) -> None:
    _print_config(_with_sets(a, _new_config(a, default_data=None), minutes=None))


def _print_config(cfg) -> None:
    """The config as YAML that --config reads back, its sizes and costs as comments."""
    import yaml

    from umtune.trainable.loop import describe

    plain = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists
    print(yaml.safe_dump(plain, sort_keys=False).rstrip())
    print("\n".join(f"# {line}" for line in describe(cfg).splitlines()))


def _translate(a: argparse.Namespace) -> None:
    from umtune.trainable.generate import DEFAULT_SAMPLING
    from umtune.trainable.translate import translate_files

    for path in translate_files(a.checkpoint, a.inputs, a.to, a.output,
                                _sampling(a, DEFAULT_SAMPLING)):
        print(path)


def _report(a: argparse.Namespace) -> None:
    from umtune.analysis.report import build_report

    print(f"report: {build_report(a.sweep_dir, a.output, clips=a.clips)}")
    if a.table:
        from umtune.analysis.results import write_ablation_table

        print(f"written: {write_ablation_table(a.sweep_dir, a.table, a.command_line)}")


def _best(a: argparse.Namespace) -> None:
    from umtune.analysis.report_data import Unavailable, load_sweep

    data = load_sweep(a.sweep_dir)
    try:
        trial, rule = data.best_trial()
        checkpoint = data.final_checkpoint(trial)
    except Unavailable as e:
        raise ValueError(f"{a.sweep_dir}: {e}") from None
    print(f"best trial: {trial} ({rule})", file=sys.stderr)
    print(checkpoint)


def _evaluate(a: argparse.Namespace) -> None:
    from umtune.analysis.evaluate import (
        EvalOptions,
        earlier_evaluation,
        evaluate_checkpoint,
        format_evaluation,
    )
    from umtune.analysis.results import write_curve_table, write_results_table
    from umtune.trainable.checkpoint import is_export
    from umtune.trainable.generate import DEFAULT_SAMPLING

    options = EvalOptions(clips=a.clips, seconds=a.seconds, seeds=a.seeds,
                          sampling=_sampling(a, DEFAULT_SAMPLING))
    exported = [c for c in a.checkpoints if is_export(c)]
    if a.table and exported:
        raise ValueError(f"{exported[0]} is an exported model; expected a training checkpoint "
                         "for --table (the table reports training time and steps)")
    folders = {}
    for checkpoint in a.checkpoints:
        other = folders.setdefault(_evaluation_folder(a, checkpoint), checkpoint)
        if other != checkpoint:
            raise ValueError(f"checkpoints {other} and {checkpoint} would both be evaluated into "
                             f"{_evaluation_folder(a, checkpoint)}; expected checkpoints of "
                             "distinct names (or evaluate them one at a time)")
    results = []
    for out, checkpoint in folders.items():
        result = None if a.again else earlier_evaluation(out, checkpoint, a.data, options)
        if result is not None:
            print(format_evaluation(result) + f"\nreused: {out}/metrics.json (the same weights, "
                  "data and options; --again evaluates anew)")
        else:
            result = evaluate_checkpoint(checkpoint, a.data, out_dir=out, options=options,
                                         progress=True)
            print(format_evaluation(result) + f"\nwritten: {out}/metrics.json")
        results.append(result)
    if a.table:
        written = write_results_table(results[0], a.checkpoints[0], a.table, a.command_line) \
            if len(results) == 1 else write_curve_table(results, a.checkpoints, a.table,
                                                        a.command_line)
        print(f"written: {written}")


def _evaluation_folder(a: argparse.Namespace, checkpoint: Path) -> Path:
    """Where a checkpoint's evaluation goes: -o, else its run's evaluation/ (a run folder, or a
    checkpoint in a run's checkpoints/), else beside the checkpoint; with several checkpoints,
    a folder for each, named after it, in there."""
    from umtune.layout import CHECKPOINTS_DIR, EVALUATION_DIR, RUN_FILE

    checkpoint = Path(checkpoint).absolute()
    run = next((r for r in (checkpoint, checkpoint.parent.parent) if (r / RUN_FILE).is_file()
                and (r == checkpoint or checkpoint.parent.name == CHECKPOINTS_DIR)), None)
    if len(a.checkpoints) == 1:
        return a.output or (run or checkpoint.parent) / EVALUATION_DIR
    if a.output:
        return a.output / checkpoint.name
    return run / EVALUATION_DIR / checkpoint.name if run else \
        checkpoint.parent / f"{EVALUATION_DIR}-{checkpoint.name}"


def _export(a: argparse.Namespace) -> None:
    from umtune.trainable.checkpoint import export_model

    print(f"exported: {export_model(a.checkpoint, a.out)}")


def _upgrade(a: argparse.Namespace) -> None:
    from umtune.trainable.run_folder import upgrade

    print(upgrade(a.run))


def _spaces(a: argparse.Namespace) -> None:
    from umtune.config import preset
    from umtune.search_spaces import describe

    print(describe([a.file] if a.file else None, preset(a.preset)))


def _cluster_check(a: argparse.Namespace) -> int:
    from umtune.cluster.check import check, format_findings

    findings = check(a.file, gpu=a.gpu, storage=a.storage)
    print(format_findings(a.file, findings))
    return 1 if any(f.level == "error" for f in findings) else 0


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default (where it has one worth showing) and keeps the
    examples' lines."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS, []) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as the rest of the command gives them, defaults in every
    help, and a command's examples at the end of its help."""

    def __init__(self, *args, examples: str | None = None, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        if examples:
            epilog = kwargs.get("epilog")
            kwargs["epilog"] = "examples:\n" + examples + (f"\n\n{epilog}" if epilog else "")
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str) -> float:
    """A finite float: `nan` and `inf` are refused where they are typed."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


RESUME_TRUST = ("SWEEP_DIR must be one you trust: resuming unpickles Tune's saved state, and a "
                "crafted sweep folder runs code as you (reading one with `umtune report` does "
                "not)")


def _config_parser() -> argparse.ArgumentParser:
    """The options of train and sweep that build the (base) config."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("config")
    base = g.add_mutually_exclusive_group()
    base.add_argument("--preset", help=f"the (base) config: tiny, cpu or paper (default: "
                      f"{DEFAULT_PRESET})")
    base.add_argument("--config", type=Path, metavar="FILE",
                      help="the (base) config from YAML or JSON: a run's config.json, what "
                      "`umtune config show` prints, or `preset: NAME` and some sections' fields")
    g.add_argument("--data", type=Path, help="dataset directory (from `umtune data`; sweep: "
                   f"default {SWEEP_DATA})")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field, e.g. --set train.confusion_lambda=0")
    return p


def _log_parser() -> argparse.ArgumentParser:
    """train's and sweep's live tracking."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--log", metavar="TRACKERS",
                   help="also log each epoch live to tensorboard, wandb and/or mlflow "
                   "(comma-separated; train: with a held-out clip reconstructed and translated; "
                   "sweep: through Ray Tune's logger callbacks)")
    return p


def _ray_parser() -> argparse.ArgumentParser:
    """The options of train and sweep that place Train workers on a Ray cluster."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("Ray")
    g.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    g.add_argument("--gpu", action="store_true", help="one GPU per Train worker (nccl)")
    g.add_argument("--cpus-per-worker", type=_number, help="CPUs (= torch threads) per worker")
    return p


def build_parser() -> argparse.ArgumentParser:
    from umtune import __version__

    p = _Parser(prog="umtune", description=__doc__.splitlines()[0],
                examples="  umtune data chorales --lines --sample-rate 8000 --out data/lines8k\n"
                         "  umtune train --preset cpu --data data/lines8k --minutes 10 --out "
                         "runs/first\n  umtune COMMAND --help")
    p.add_argument("--version", action="version", version=f"umtune {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="on an error, show its traceback instead of one line")
    sub = p.add_subparsers(dest="command", required=True)
    config, ray = _config_parser(), _ray_parser()
    _add_data(sub)
    _add_train(sub, config, ray)
    _add_sweep(sub, config, ray)
    _add_generation(sub)
    _add_tools(sub, config)
    return p


def _add_data(sub) -> None:
    from umtune.config import DEFAULT_DOMAINS

    data = sub.add_parser("data", help="write or inspect a dataset").add_subparsers(
        dest="data_command", required=True)
    ch = data.add_parser("chorales", help="render Bach from music21's corpus with FluidSynth",
                         examples="  umtune data chorales --lines --sample-rate 8000 --out "
                                  "data/lines8k\n  umtune data chorales --domains piano,violin "
                                  "--pieces 4 --out data/small")
    ch.add_argument("--out", type=Path, required=True, help="the dataset directory to write")
    ch.add_argument("--domains", default=",".join(DEFAULT_DOMAINS),
                    help="comma-separated instrument names (see `umtune data instruments`)")
    ch.add_argument("--sample-rate", type=int, default=16000, help="Hz of the rendered audio")
    ch.add_argument("--pieces", type=int, default=8, help="training pieces per domain")
    ch.add_argument("--heldout", type=int, default=6, help="held-out pieces (all domains)")
    ch.add_argument("--seed", type=int, default=0,
                    help="chooses the pieces and which domain renders each")
    ch.add_argument("--max-piece-seconds", type=_number, default=None,
                    help="crop every piece to this length (default: whole pieces)")
    ch.add_argument("--lines", action="store_true",
                    help="render each voice of a piece as its own file, one note at a time")
    ch.add_argument("--soundfont", type=Path, default=None,
                    help="General MIDI .sf2 (default: FluidR3_GM)")
    ch.add_argument("--force", action="store_true", help="replace an existing dataset")
    ch.set_defaults(handler=_data_chorales)

    ins = data.add_parser("instruments", help="list instrument names for --domains")
    ins.set_defaults(handler=_data_instruments)

    converting = argparse.ArgumentParser(add_help=False)
    converting.add_argument("--out", type=Path, required=True,
                            help="the dataset directory to write")
    converting.add_argument("--sample-rate", type=int, default=16000,
                            help="Hz: every file is resampled to it")
    converting.add_argument("--min-seconds", type=_number, default=0.75,
                            help="shortest usable file (one training segment)")
    converting.add_argument("--seed", type=int, default=0, help="seeds the held-out split")
    converting.add_argument("--force", action="store_true", help="replace an existing dataset "
                            "at --out (once the new one is complete)")
    converting.add_argument("--skip-bad", action="store_true",
                            help="skip bad files, listing each")
    im = data.add_parser("import", help="import a folder of per-domain audio folders",
                         parents=[converting],
                         examples="  umtune data import recordings/ --out data/mine   "
                                  "# recordings/<domain>/*.wav|flac|mp3...\n"
                                  "  umtune data import recordings/ --out data/mine --skip-bad "
                                  "--heldout-fraction 0.1")
    im.add_argument("src", type=Path, help="a folder holding one folder of audio per domain")
    im.add_argument("--heldout-fraction", type=_number, default=0.2,
                    help="share of each domain's files held out for evaluation")
    im.set_defaults(handler=_data_import)

    mn = data.add_parser("musicnet", help="import MusicNet (the paper's data) from a copy you "
                         "have: one domain per ensemble and composer", parents=[converting],
                         examples="  umtune data musicnet ~/musicnet --out data/musicnet   "
                                  "# the paper's six domains\n  umtune data musicnet "
                                  "~/musicnet --domains 'Solo Piano:Bach,Solo Cello:Bach' "
                                  "--out data/bach2")
    mn.add_argument("root", type=Path, help="MusicNet's folder: train_data/, test_data/ and "
                    "musicnet_metadata.csv")
    mn.add_argument("--domains", default="paper",
                    help="'paper' (its six: Beethoven's accompanied violin, Bach's solo cello "
                    "and solo piano, Beethoven's solo piano and string quartets, Cambini's wind "
                    "quintets) or comma-separated ENSEMBLE:COMPOSER pairs")
    mn.add_argument("--heldout-fraction", type=_number, default=0.2,
                    help="share of recordings held out in a domain without test_data "
                    "recordings (the others hold out exactly MusicNet's test split)")
    mn.set_defaults(handler=_data_musicnet)

    su = data.add_parser("summary", help="print a dataset's summary")
    su.add_argument("path", type=Path, help="a dataset directory")
    su.set_defaults(handler=_data_summary)


def _add_train(sub, config, ray) -> None:
    tr = sub.add_parser("train", help="train one network (in this process, or on Ray Train)",
                        parents=[config, ray, _log_parser()],
                        examples="  umtune train --preset cpu --data data/lines8k --minutes 60 "
                                 "--out runs/cpu\n  umtune train --resume runs/cpu --minutes 120"
                                 "   # budgets count the whole run\n  umtune train --workers 2 "
                                 "--data data/bach --out runs/ddp --minutes 10   # Ray Train")
    tr.add_argument("--out", type=Path, help="run folder: run.json, config.json, metrics.jsonl, "
                    "checkpoints/epoch_NNNNNN/")
    tr.add_argument("--minutes", type=_number, help="wall-clock training budget")
    tr.add_argument("--keep-every", type=_number, metavar="MINUTES",
                    help="also keep the first checkpoint after every MINUTES of training in "
                    "RUN/checkpoints/ (plain runs; else only the newest), e.g. to evaluate the run "
                    "over time")
    tr.add_argument("--resume", type=Path, metavar="RUN_DIR",
                    help="continue the run in RUN_DIR from its newest checkpoint (--data: the "
                    "dataset has moved; --set: any field but the model's)")
    tr.add_argument("--adopt", action="store_true",
                    help="with --resume: continue from a checkpoint that does not continue the "
                    "run's history (one copied in from another run)")
    g = tr.add_argument_group("Ray Train (any option here or under Ray trains on Ray)")
    g.add_argument("--workers", type=int, help="training processes (DDP), one per GPU with "
                   "--gpu; the global batch data.batch_per_domain is split over them")
    g.add_argument("--storage", help="where runs live: a local dir (one node), file:///shared "
                   "or s3://... (multi-node); the run is STORAGE/<name of --out>")
    g.add_argument("--max-failures", type=int, default=3,
                   help="worker-group restarts from the latest checkpoint before giving up")
    tr.add_argument("--log-audio-seconds", type=_number, default=2.0, metavar="S",
                    help="with --log: seconds of the clip generated from each epoch's "
                    "checkpoint (0: metrics only; generation takes a while on a CPU)")
    tr.add_argument("--dry-run", action="store_true",
                    help="print the resolved config and what would run, then exit")
    tr.set_defaults(handler=_train)


def _add_sweep(sub, config, ray) -> None:
    sw = sub.add_parser("sweep", help="sweep hyperparameters on Ray Tune (a training run per "
                        "trial)", epilog=f"--resume: {RESUME_TRUST}.",
                        parents=[config, ray, _log_parser()],
                        examples="  umtune sweep --space lambda-aug --samples 6 --preset cpu "
                                 "--data data/lines8k --minutes-per-trial 2 --name demo\n"
                                 "  umtune sweep --space ablation --preset cpu --data "
                                 "data/lines8k --cpus-per-worker 1 --minutes-per-trial 20")
    sw.add_argument("--space", default="ablation",
                    help="a built-in space (see `umtune spaces`) or a YAML file")
    sw.add_argument("--samples", type=int, default=1,
                    help="trials to sample (grid search: repetitions of the grid)")
    sw.add_argument("--search", choices=["optuna", "random", "grid"],
                    help="how points are chosen (default: grid for a space of grid parameters "
                    "only, as `umtune spaces` says; else optuna, or random with pbt and pb2)")
    sw.add_argument("--scheduler", default="asha",
                    choices=["asha", "hyperband", "median", "pbt", "pb2", "none"],
                    help="on held-out CE at equal epochs: asha, hyperband (pauses and resumes "
                    "trials) and median (the median stopping rule) stop poor trials early; pbt "
                    "and pb2 (population-based training, one-worker trials) give the worst "
                    "quarter the best trials' weights and change the space's train.* fields "
                    "(pbt resamples them, pb2 fits a Gaussian process over their ranges); none "
                    "runs every trial to its end")
    sw.add_argument("--grace-epochs", type=int, default=1,
                    help="asha, median: epochs every trial runs before it can be stopped; pbt, "
                    "pb2: epochs between perturbations")
    sw.add_argument("--enqueue-base", action="store_true",
                    help="optuna: the first trial is the base config itself (--preset/--config "
                    "with --set), e.g. the paper's settings, before the sampler explores")
    sw.add_argument("--objective", default="quality",
                    help="quality, or quality,cost for a multi-objective (Pareto) search")
    sw.add_argument("--trial-workers", type=int, default=1, help="Train workers per trial")
    sw.add_argument("--dashboard", action="store_true", help="the local Ray started here runs "
                    "Ray's dashboard (127.0.0.1:8265) even for one-worker trials, which train "
                    "without it: its processes take time from training on a few cores")
    sw.add_argument("--max-concurrent", type=int,
                    help="trials at once (default: as many as the cluster's resources fit)")
    sw.add_argument("--minutes-per-trial", type=_number, help="training budget of each trial")
    sw.add_argument("--storage", default="sweeps",
                    help="where sweeps live (a shared URI or file:/// on multi-node clusters)")
    sw.add_argument("--name", help="the sweep's folder under --storage (default: space-time)")
    sw.add_argument("--seed", type=int, default=0, help="the searcher's seed")
    sw.add_argument("--eval-clips", type=int, default=1, help="held-out clips per domain pair "
                    "translated and scored at each trial's end (0: no evaluation)")
    sw.add_argument("--eval-seconds", type=_number, default=1.0, help="length of those clips")
    sw.add_argument("--eval-seeds", type=int, default=1, help="evaluation seeds averaged at "
                    "each trial's end (other clips, other samples)")
    sw.add_argument("--resume", metavar="SWEEP_DIR",
                    help="finish the sweep in SWEEP_DIR after its driver stopped. "
                    + RESUME_TRUST)
    sw.add_argument("--dry-run", action="store_true",
                    help="print the base config, the space and what would run, then exit")
    sw.set_defaults(handler=_sweep)


def _add_generation(sub) -> None:
    sampling = _sampling_parser()
    tl = sub.add_parser("translate", help="translate audio files into a domain",
                        parents=[sampling],
                        examples="  umtune translate --checkpoint runs/cpu --to "
                                 "violin clip.wav more/ -o out/")
    tl.add_argument("--checkpoint", type=Path, required=True,
                    help="a run folder (its newest checkpoint), a checkpoint folder (e.g. "
                    "RUN/checkpoints/epoch_000012) or an exported model")
    tl.add_argument("--to", required=True, help="target domain")
    tl.add_argument("inputs", type=Path, nargs="+", help="audio files or folders")
    tl.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    tl.set_defaults(handler=_translate)

    ev = sub.add_parser("evaluate", help="score a checkpoint's translations of held-out clips",
                        parents=[sampling],
                        examples="  umtune evaluate runs/cpu --clips 4 --seeds 2 "
                                 "--table results/cpu.md\n  umtune evaluate "
                                 "runs/cpu/checkpoints/* --table curve.md   # over training "
                                 "time")
    ev.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                    help="a run folder (its newest checkpoint) or a checkpoint folder; several: "
                    "each is evaluated, and --table compares them (e.g. RUN/checkpoints/*)")
    ev.add_argument("--data", type=Path, help="dataset (default: the checkpoint's data.path)")
    ev.add_argument("--clips", type=int, default=2, help="held-out clips per domain pair")
    ev.add_argument("--seconds", type=_number, default=1.0, help="length of each clip")
    ev.add_argument("--seeds", type=int, default=1,
                    help="evaluate with this many seeds from --seed on (other clips, other "
                    "samples); the summary averages them and gives their spread")
    ev.add_argument("-o", "--output", type=Path,
                    help="folder for metrics.json and audio/ (default: the run's evaluation/, or "
                    "beside the checkpoint; several checkpoints: a folder each, named after it)")
    ev.add_argument("--again", action="store_true",
                    help="evaluate anew where the output folder already holds an evaluation of "
                    "the same weights, data and options (by default it is reused, so that an "
                    "evaluation of many checkpoints goes on where it stopped)")
    ev.add_argument("--table", type=Path, metavar="FILE.md",
                    help="also write the results table against the translation targets, with "
                    "the training facts and this machine (several checkpoints: one row each)")
    ev.set_defaults(handler=_evaluate)


def _add_tools(sub, config) -> None:
    co = sub.add_parser("config", help="configs").add_subparsers(dest="config_command",
                                                                 required=True)
    cs = co.add_parser("show", help="print the resolved config (YAML that --config reads "
                       "back), its parameter count, receptive fields and generation cost",
                       parents=[config],
                       examples="  umtune config show --preset cpu --set train.lr=2e-4\n"
                                "  umtune config show --config runs/cpu/config.json")
    cs.set_defaults(handler=_config_show)

    ex = sub.add_parser("export", help="write a checkpoint's weights and config only, for "
                        "sharing (no optimizer state; translate, evaluate and load_translator "
                        "read it)", examples="  umtune export runs/cpu shared/cpu")
    ex.add_argument("checkpoint", type=Path, help="a run folder (its newest checkpoint) or a "
                    "checkpoint folder")
    ex.add_argument("out", type=Path, help="a new folder: model.pt and config.json")
    ex.set_defaults(handler=_export)

    up = sub.add_parser("upgrade", help="turn a run folder of umtune's earlier shape (checkpoint/,"
                        " checkpoints/minute_*, or a Ray Train run's epoch_NNNNNN/ beside Ray's "
                        "snapshot) into today's, in place", examples="  umtune upgrade runs/cpu")
    up.add_argument("run", type=Path, help="the run folder")
    up.set_defaults(handler=_upgrade)

    sp = sub.add_parser("spaces", help="list search spaces, or check and describe a YAML one",
                        examples="  umtune spaces\n  umtune spaces --file my_space.yaml "
                                 "--preset cpu")
    sp.add_argument("--file", type=Path, help="a YAML search space (format: umtune.search_spaces)")
    sp.add_argument("--preset", default="tiny", help="the base config the spaces are built on")
    sp.set_defaults(handler=_spaces)

    rp = sub.add_parser("report", help="write a sweep's self-contained HTML report (offline: "
                        "tables, plots, playable audio)",
                        examples="  umtune report sweeps/demo -o reports/demo.html\n  umtune "
                                 "report sweeps/ablation -o reports/a.html --table "
                                 "results/ablation.md")
    rp.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder (from `umtune sweep`)")
    rp.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                    help="the HTML file to write (default: report.html)")
    rp.add_argument("--clips", type=int, default=3, help="held-out clips in the audio gallery")
    rp.add_argument("--table", type=Path, metavar="FILE.md",
                    help="also write the trials and whether each component (lambda, "
                    "augmentation) helps, as Markdown")
    rp.set_defaults(handler=_report)

    bp = sub.add_parser("best", help="print the checkpoint of a sweep's best trial (the rule "
                        "the report uses), for translate and evaluate",
                        examples="  umtune translate --checkpoint \"$(umtune best sweeps/demo)\" "
                                 "--to violin clip.wav -o out/")
    bp.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder (from `umtune sweep`)")
    bp.set_defaults(handler=_best)

    cl = sub.add_parser("cluster", help="Ray clusters").add_subparsers(
        dest="cluster_command", required=True)
    cc = cl.add_parser("check", help="validate a `ray up` file: Ray's schema, then umtune's "
                       "rules (exit 1 on errors)")
    cc.add_argument("file", type=Path, help="a cluster launcher YAML, e.g. ray_cluster.yaml")
    cc.add_argument("--gpu", action="store_true", help="sweeps will run with --gpu: require "
                    "a node type with GPUs")
    cc.add_argument("--storage", help="the --storage sweeps will use (a shared URI satisfies "
                    "the multi-node storage rule)")
    cc.set_defaults(handler=_cluster_check)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["umtune", *argv])  # recorded in the tables written
    if args.command == "train" and not args.resume and not (
            (args.data or args.config) and (args.out or args.dry_run)):
        parser.error("train needs --data (or --config) and --out (or --resume RUN_DIR)")
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.handler(args) or 0
    except Exception as e:
        if args.debug:
            raise
        return _report_error(e)
    except (KeyboardInterrupt, Terminated) as stop:
        if args.debug:
            raise
        how, code = ("terminated (SIGTERM)", 143) if isinstance(stop, Terminated) else \
            ("interrupted", 130)
        print(f"umtune: {how}{_what_was_saved(args)}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so that what is half-written is cleaned up."""


def _terminated(signum, frame):
    raise Terminated


def _what_was_saved(a: argparse.Namespace) -> str:
    """For a plain training run: where its last finished epoch is and how to go on."""
    run = getattr(a, "resume", None) or getattr(a, "out", None)
    if a.command != "train" or run is None or getattr(a, "workers", None):
        return ""
    from umtune.trainable.run_folder import LocalRun

    if not LocalRun(Path(run)).exists():
        return f"; no epoch of {run} was finished, nothing to resume"
    return (f"; {LocalRun(Path(run)).checkpoint} holds the last finished epoch: "
            f"continue with `umtune train --resume {run}`")


def _report_error(e: Exception) -> int:
    """One line on stderr: the message of bad input (exit 2), or the type and first line of any
    other error (exit 1), with a pointer to --debug."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if isinstance(e, (ValueError, OSError)):
        more = " (more with --debug)" if len(lines) > 1 else ""
        print(f"umtune: error: {(lines or [type(e).__name__])[0]}{more}", file=sys.stderr)
        return 2
    print(f"umtune: error: {type(e).__name__}: {(lines or ['(no message)'])[0]} (run `umtune "
          "--debug ...` for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
