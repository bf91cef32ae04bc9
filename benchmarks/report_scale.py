"""Time `umtune report` on synthetic sweeps of N trials: is the report's cost linear in N?

Each sweep folder is built by the report tests' own fixture builder (tests/test_report.py's
`make_sweep`: trials.parquet, sweep.json, study.db, Tune's result.json per trial) with N random
trials: lambda log-uniform in [1e-3, 1e-1] with its exact-0 switch off in half of them, the
augmentation uniform, two dilation schedules, four latent widths, a mix of statuses, and no
evaluations (they need a rendered dataset). Only `build_report` is timed, as the CLI calls it.

    PYTHONPATH=. .venv/bin/python benchmarks/report_scale.py --trials 100 1000 10000

Measured on the 2-core development machine, run with `nice -n 19` and OMP_NUM_THREADS=1
beside a training run that held both cores (so the seconds are upper bounds); "build" is the
fixture's writing of the folder (the sweep's own pareto_front and write_study), not the report:

         N  build s  report s  HTML MB
       100      4.3       0.6      4.8     (before: 9.4 s in the same conditions)
      1000     14.3       2.1      5.9     (before: unfinished after 13 min, issue 21)
     10000    162.2      19.1     11.6     (a separate run: --trials 10000)

Chromium (headless, same conditions) opened a 10,000-trial page (no study.db) and drew its
8 plots in 11 s; plotly.js inlined is 4.6 MB of every page; the trial table keeps 1,000 rows.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fixture builder

from tests.test_report import DILATIONS, make_sweep  # noqa: E402
from umtune.analysis.report import build_report  # noqa: E402

STATUSES = ("completed", "completed", "completed", "stopped early", "diverged", "failed")


def synthetic_trials(n: int, seed: int = 0) -> dict:
    """`make_sweep`'s trial tuples: (status, lambda, lambda enabled, aug, encoder dilations,
    latent, heldout_ce, epochs)."""
    rng = np.random.default_rng(seed)
    trials = {}
    for i in range(n):
        status = STATUSES[rng.integers(len(STATUSES))]
        ce = {"diverged": math.inf, "failed": math.nan}.get(status, 5.0 + rng.uniform(0, 0.5))
        epochs = {"completed": 4, "stopped early": 1, "diverged": 2, "failed": 0}[status]
        trials[f"trial_s_{i:05d}"] = (status, float(10 ** rng.uniform(-3, -1)),
                                      bool(rng.integers(2)), float(rng.uniform(0, 1)),
                                      DILATIONS[i % 2], int(rng.choice([4, 8, 16, 32])),
                                      float(ce), epochs)
    return trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--no-study", action="store_true",
                        help="leave out study.db (writing it is slow for 10,000 trials)")
    args = parser.parse_args()
    print(f"{'N':>7} {'build s':>8} {'report s':>9} {'HTML MB':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.trials:
            start = time.perf_counter()
            sweep = make_sweep(Path(tmp), None, objectives=("quality", "cost"),
                               trials=synthetic_trials(n), evaluated={},
                               study=not args.no_study, name=f"scale{n}")
            built = time.perf_counter() - start
            start = time.perf_counter()
            out = build_report(sweep, Path(tmp) / f"report{n}.html")
            took = time.perf_counter() - start
            print(f"{n:>7} {built:>8.1f} {took:>9.1f} {out.stat().st_size / 2**20:>8.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
