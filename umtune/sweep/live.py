"""The sweep's Optuna study while it runs, for optuna-dashboard and Optuna's plots.

`LiveStudy` is a Ray Tune callback in the driver: from a trial's first report on, study.db in
the sweep folder holds it as a running trial with its sampled values and its held-out CE at
each epoch as intermediate values (single-objective sweeps; Optuna keeps none for several
objectives), and marks it complete or failed when it ends. When the sweep ends, `write_study`
replaces the file with the final states (trials a scheduler stopped are pruned) and the same
curves.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune import Callback

from umtune.config import RunConfig
from umtune.layout import trial_name
from umtune.sweep.options import SweepOptions
from umtune.sweep.table import create_study, study_distributions


class LiveStudy(Callback):
    def __init__(self, file: Path, opts: SweepOptions, base: RunConfig, name: str):
        self.file, self.opts, self.name = file, opts, name
        self.distributions = study_distributions(opts, base)
        self.metrics = opts.metrics()[0]
        self.study = None
        self.running: dict[str, object] = {}  # trial name -> its Optuna trial

    def __getstate__(self) -> dict:  # Tune may pickle callbacks; a database handle does not
        return {**self.__dict__, "study": None, "running": {}}

    def _optuna_trial(self, trial):
        name = trial_name(trial.trial_id)
        if name not in self.running:
            if self.study is None:
                self.study = create_study(self.file, self.opts, self.name)
            params = {k: v for k, v in trial.config.items() if k in self.distributions}
            self.study.enqueue_trial(params, user_attrs={"trial": name})
            self.running[name] = self.study.ask(self.distributions)
        return self.running[name]

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metrics[0])
        optuna_trial = self._optuna_trial(trial)
        if len(self.metrics) == 1 and isinstance(value, (int, float)) and math.isfinite(value):
            optuna_trial.report(float(value), int(result.get("epoch", iteration)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        values = [(trial.last_result or {}).get(m) for m in self.metrics]
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            optuna_trial = self._optuna_trial(trial)  # creates the study on a first end
            self.study.tell(optuna_trial, [float(v) for v in values])
        else:
            self._fail(trial)
        self.running.pop(trial_name(trial.trial_id), None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._fail(trial)
        self.running.pop(trial_name(trial.trial_id), None)

    def _fail(self, trial) -> None:
        import optuna

        optuna_trial = self._optuna_trial(trial)  # a trial may fail before it reports
        self.study.tell(optuna_trial, state=optuna.trial.TrialState.FAIL)
