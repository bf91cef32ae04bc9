"""What a sweep hands each trial: its Train run's resources and its end-of-run evaluation."""

import itertools

import numpy as np
import pandas as pd
import pytest

from umtune.analysis.evaluate import EvalOptions
from umtune.sweep import SweepOptions, TrialOptions, pareto_front
from umtune.sweep.table import lineage
from umtune.trainable.ray_train import Resources


def test_sweep_options_become_each_trials_resources_and_evaluation():
    opts = SweepOptions(space="ablation", trial_workers=2, cpus_per_worker=0.5, train_failures=0,
                        eval_clips=3, eval_seconds=0.5, eval_seeds=2)
    trial = opts.trial_options("/sweeps/s/train")
    assert trial.resources == Resources(workers=2, cpus_per_worker=0.5, max_failures=0)
    assert trial.evaluation == EvalOptions(clips=3, seconds=0.5, seeds=2)
    assert TrialOptions.from_dict(trial.to_dict()) == trial  # as it travels in Tune's config
    assert opts.metrics() == (["heldout_ce"], ["min"])
    assert SweepOptions(space="ablation", eval_clips=0).trial_options("/t").evaluation is None


def test_a_users_trial_dict_may_name_any_subset_of_keys():
    """`config["trial"]` in tune.run: absent keys take the trial defaults."""
    trial = TrialOptions.from_dict({"storage": "/runs", "eval_clips": 0})
    assert trial == TrialOptions(evaluation=None, storage="/runs")
    assert trial.resources == Resources(workers=1, max_failures=1)
    trial = TrialOptions.from_dict({"workers": 2, "eval_seeds": 3})
    assert trial.resources.workers == 2 and trial.evaluation == EvalOptions(clips=1, seeds=3)


@pytest.mark.parametrize("bad", [{"workers": 0}, {"max_failures": -1}, {"cpus_per_worker": 0},
                                 {"eval_seconds": float("nan")}, {"eval_seeds": 0}])
def test_bad_trial_options_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="expected"):
        TrialOptions.from_dict(bad)


def test_a_set_of_a_field_the_space_varies_is_refused_naming_both(tiny_dataset, capsys):
    """--set train.confusion_lambda=0 with the ablation space (which varies it) would lose to
    the space without a word: exit 2 before Ray starts."""
    from umtune.cli import main

    assert main(["sweep", "--space", "ablation", "--data", str(tiny_dataset), "--set",
                 "train.confusion_lambda=0"]) == 2
    assert "the space 'ablation' varies train.confusion_lambda too" in capsys.readouterr().err


OBJECTIVES = ["heldout_ce", "generation_flops_per_sample"]


def test_multi_objective_marks_the_pareto_front():
    """Rows not dominated in (quality, cost) are the front; non-finite rows never are, nor are
    ineligible ones (a sweep's stopped trials); equal rows are both on it."""
    table = pd.DataFrame({"heldout_ce": [1.0, 2.0, 1.5, 0.5, float("inf"), 1.0],
                          "generation_flops_per_sample": [4.0, 1.0, 3.0, 9.0, 0.1, 4.0]})
    assert pareto_front(table, OBJECTIVES, ["min", "min"]) == [True] * 4 + [False, True]
    table.loc[2, "generation_flops_per_sample"] = 5.0  # now dominated by row 0
    assert pareto_front(table, OBJECTIVES, ["min", "min"])[2] is False
    stopped = pd.Series([True, False, False, False, False, True])  # rows 0 and 5 stopped early
    assert pareto_front(table, OBJECTIVES, ["min", "min"], eligible=~stopped) == \
        [False, True, True, True, False, False]  # nothing eligible dominates row 2 now
    assert pareto_front(table, ["heldout_ce", "missing"], ["min", "min"]) == [False] * 6


def test_the_pareto_front_of_ten_thousand_trials_is_the_brute_force_one():
    """Three objectives, one maximised, ties included: the front equals the pairwise
    definition on 400 rows, and 10,000 rows are computed (once, quickly: no pairwise loop)."""
    rng = np.random.default_rng(0)
    modes = ["min", "max", "min"]
    table = pd.DataFrame(rng.integers(0, 12, size=(400, 3)).astype(float), columns=list("abc"))
    signed = table.to_numpy() * [1, -1, 1]
    brute = [not any((signed[j] <= signed[i]).all() and (signed[j] != signed[i]).any()
                     for j in range(len(signed))) for i in range(len(signed))]
    assert pareto_front(table, list("abc"), modes) == brute and any(brute)
    big = pd.DataFrame(rng.normal(size=(10_000, 2)), columns=["x", "y"])
    front = pareto_front(big, ["x", "y"], ["min", "min"])
    ys = big["y"][front].to_numpy()[np.argsort(big["x"][front].to_numpy())]
    assert len(ys) > 1 and all(a > b for a, b in itertools.pairwise(ys))  # a staircase


def test_lineage_names_the_trials_and_values_of_each_span_of_epochs():
    """Under PBT a run's history begins in the trial whose weights it took: each span of
    epochs is named by its trial, and each scheduled field by its values."""
    history = [{"epoch": e, "epoch_trial": t, "schedule/train.lr": lr,
                "schedule/train.lr_schedule": "step"}
               for e, t, lr in ((1, "trial_a", 3e-3), (2, "trial_a", 3e-3), (3, "trial_b", 3.6e-3),
                                (4, "trial_b", 3.6e-3), (5, "trial_b", 2.4e-3))]
    assert lineage(history) == {
        "lineage": "trial_a 1-2, trial_b 3-5",
        "schedule": "train.lr 0.003 (1-2), 0.0036 (3-4), 0.0024 (5); train.lr_schedule step (1-5)"}
    assert lineage([]) == {"lineage": "", "schedule": ""}


@pytest.mark.parametrize("scheduler", ["pbt", "pb2"])
@pytest.mark.parametrize("change, expected", [
    ({"search": "optuna"}, "random or grid with --scheduler"),
    ({"trial_workers": 2}, "1 with --scheduler"),
    ({"objectives": ("quality", "cost")}, "a single objective"),
])
def test_population_based_training_is_refused_where_it_cannot_work(scheduler, change, expected):
    with pytest.raises(ValueError, match=expected):
        SweepOptions(space="lambda-aug", scheduler=scheduler, **{"search": "random", **change})
