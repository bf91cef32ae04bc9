"""What a sweep hands each trial: its Train run's resources and its end-of-run evaluation."""

import pytest

from umtune.analysis.evaluate import EvalOptions
from umtune.sweep import SweepOptions, TrialOptions
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
