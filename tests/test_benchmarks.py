"""benchmarks/train_step.py's own measuring: the FLOPs it counts and the matmuls it replays."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from train_step import (  # noqa: E402
    MATMULS,
    MatmulRecorder,
    flop_counter,
    matmuls_alone,
    step_matmuls,
)

from umtune.config import preset  # noqa: E402
from umtune.data import Dataset  # noqa: E402
from umtune.trainable.loop import Trainer  # noqa: E402


def test_the_recorder_keeps_each_matmuls_layout_and_replays_it():
    """Transposed and expanded operands, in-place and out= forms: each call recorded once by
    its layouts (a stride-0 weight stays stride 0), and the replay's GFLOP are the products'."""
    x, w = torch.randn(3, 40, 8), torch.randn(6, 8)
    acc, out = torch.zeros(40, 6), torch.empty(40, 6)
    with MatmulRecorder() as recorder:
        torch.bmm(x, w.t().expand(3, -1, -1))
        acc.addmm_(x[0], w.t())
        torch.mm(x[1], w.t(), out=out)
        torch.mm(x[1], w.t(), out=out)
        x.relu()  # not a matmul
    assert sorted(recorder.calls.values()) == [1, 1, 2]
    (bmm_args,) = [args for (func, args, _), _ in recorder.calls.items()
                   if func.overloadpacket is torch.ops.aten.bmm]
    assert bmm_args[1][:2] == ((3, 8, 6), (0, 1, 8))  # shape and strides: w.t() expanded
    seconds, gflop = matmuls_alone(recorder.calls, reps=1)
    assert seconds > 0 and gflop == pytest.approx(2 * 8 * 6 * (3 * 40 + 40 + 2 * 40) / 1e9)


def test_the_steps_matmuls_are_those_the_flop_counter_counts(tiny_dataset):
    """A `tiny` step in fp32 records the matmul FLOPs the benchmark's counter counts for it, the
    encoder's in-place products (which FlopCounterMode misses alone) included."""
    data = Dataset.open(tiny_dataset)
    cfg = preset("tiny", data.domains)
    cfg = replace(cfg, data=replace(cfg.data, path=str(tiny_dataset),
                                    sample_rate=data.sample_rate),
                  train=replace(cfg.train, precision="fp32"))
    calls = step_matmuls(cfg, data)
    trainer = Trainer(cfg, data)
    trainer.step()
    with flop_counter() as counter:
        trainer.step()
    counted = sum(n for op, n in counter.get_flop_counts()["Global"].items() if op in MATMULS)
    assert any(func.overloadpacket is torch.ops.aten.baddbmm_ for func, _, _ in calls)
    seconds, gflop = matmuls_alone(calls, reps=1)
    assert gflop * 1e9 == pytest.approx(counted)
