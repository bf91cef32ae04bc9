"""The `umtune` command: parses arguments, builds configs, and calls the library.

Each subcommand's handler is a few lines that call one library function; nothing below this
module parses arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_chorales(a: argparse.Namespace) -> None:
    from umtune.data import render_chorales

    render_chorales(a.out, domains=tuple(a.domains.split(",")), sample_rate=a.sample_rate,
                    pieces_per_domain=a.pieces, heldout_pieces=a.heldout, seed=a.seed,
                    force=a.force)


def _data_import(a: argparse.Namespace) -> None:
    from umtune.data import import_folders

    import_folders(a.src, a.out, sample_rate=a.sample_rate, heldout_fraction=a.heldout_fraction,
                   seed=a.seed, force=a.force, skip_bad=a.skip_bad,
                   min_seconds=a.min_seconds)


def _data_summary(a: argparse.Namespace) -> None:
    from umtune.data import Dataset

    print(Dataset.open(a.path).summary())


def build_parser() -> argparse.ArgumentParser:
    from umtune.config import DEFAULT_DOMAINS

    p = argparse.ArgumentParser(prog="umtune", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="write or inspect a dataset").add_subparsers(
        dest="data_command", required=True)
    ch = data.add_parser("chorales", help="render Bach from music21's corpus with FluidSynth")
    ch.add_argument("--out", type=Path, required=True)
    ch.add_argument("--domains", default=",".join(DEFAULT_DOMAINS),
                    help="comma-separated instrument names (see `umtune data instruments`)")
    ch.add_argument("--sample-rate", type=int, default=16000)
    ch.add_argument("--pieces", type=int, default=8, help="training pieces per domain")
    ch.add_argument("--heldout", type=int, default=6, help="held-out pieces (all domains)")
    ch.add_argument("--seed", type=int, default=0)
    ch.add_argument("--force", action="store_true", help="replace an existing dataset")
    ch.set_defaults(handler=_data_chorales)

    im = data.add_parser("import", help="import a folder of per-domain audio folders")
    im.add_argument("src", type=Path)
    im.add_argument("--out", type=Path, required=True)
    im.add_argument("--sample-rate", type=int, default=16000)
    im.add_argument("--heldout-fraction", type=float, default=0.2)
    im.add_argument("--min-seconds", type=float, default=0.75,
                    help="shortest usable file (one training segment)")
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--force", action="store_true")
    im.add_argument("--skip-bad", action="store_true", help="skip bad files, listing each")
    im.set_defaults(handler=_data_import)

    su = data.add_parser("summary", help="print a dataset's summary")
    su.add_argument("path", type=Path)
    su.set_defaults(handler=_data_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        print(f"umtune: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
