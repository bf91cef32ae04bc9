"""The sweep side: Ray Tune over search spaces, one training run per trial.

    driver.py   run_sweep / resume_sweep: the space, Optuna or random/grid search, ASHA -> Tuner
    trial.py    tune_trial, the trainable: one training run, then the end-of-run evaluation
    options.py  SweepOptions (saved in sweep.json); each trial's TrialOptions come from them
    table.py    the trial table, its Pareto front, the Optuna study, the printed summary
    folder.py   reading and writing the sweep folder's own files (names: umtune/layout.py)

For Tune's own APIs: `tune.with_resources(umtune.sweep.tune_trial,
umtune.sweep.trial_resources)`. Importing this package loads Ray and torch.
"""

from umtune.sweep.driver import resume_sweep, run_sweep
from umtune.sweep.options import SweepOptions
from umtune.sweep.table import SweepResult, pareto_front, summary, trials_table, write_study
from umtune.sweep.trial import TrialOptions, trial_resources, tune_trial

__all__ = ["SweepOptions", "SweepResult", "TrialOptions", "run_sweep", "resume_sweep",
           "pareto_front", "summary", "trials_table", "write_study", "tune_trial",
           "trial_resources"]
