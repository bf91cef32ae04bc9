"""benchmarks/train_step.py's own measuring: the FLOPs it counts and the products it replays."""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from train_step import (  # noqa: E402
    ProductRecorder,
    flop_counter,
    measure,
    products_alone,
)

from umtune.config import preset  # noqa: E402
from umtune.data import Dataset  # noqa: E402


def test_the_recorder_keeps_each_products_layout_and_replays_it():
    """Transposed and expanded operands, in-place and out= forms, a convolution and its
    backward: each call recorded by its layouts (a stride-0 weight stays stride 0), repeats
    counted, and the replays' FLOPs those of the calls."""
    x, w = torch.randn(3, 40, 8), torch.randn(6, 8)
    acc, out = torch.zeros(40, 6), torch.empty(40, 6)
    signal = torch.randn(2, 8, 50, requires_grad=True)

    def products():
        torch.bmm(x, w.t().expand(3, -1, -1))
        acc.addmm_(x[0], w.t())
        for _ in range(2):
            torch.mm(x[1], w.t(), out=out)
        F.conv1d(signal, w[..., None].expand(-1, -1, 3), dilation=2).sum().backward()
        x.relu()  # not a product

    with flop_counter() as counter:
        products()
    with ProductRecorder() as recorder:
        products()
    assert sorted(recorder.calls.values()) == [1, 1, 1, 1, 2]
    (bmm_args,) = [args for func, args, _ in recorder.calls
                   if func.overloadpacket is torch.ops.aten.bmm]
    assert bmm_args[1][:2] == ((3, 8, 6), (0, 1, 8))  # shape and strides: w.t() expanded
    seconds, gflop = products_alone(recorder.calls, reps=1)
    assert seconds > 0 and gflop * 1e9 == counter.get_total_flops()


def test_a_steps_recorded_products_are_its_counted_flops(tiny_dataset):
    """A `tiny` step in fp32: the products recorded and replayed carry every FLOP the
    benchmark counts for the step, the encoder's in-place products (which FlopCounterMode
    misses alone) included."""
    data = Dataset.open(tiny_dataset)
    cfg = preset("tiny", data.domains)
    cfg = replace(cfg, data=replace(cfg.data, path=str(tiny_dataset),
                                    sample_rate=data.sample_rate),
                  train=replace(cfg.train, precision="fp32"))
    r = measure(cfg, data, steps=1, products=True)
    calls = r["products"]
    seconds, gflop = products_alone(calls, reps=1)
    assert gflop == pytest.approx(r["GFLOP/step"])
    in_place = Counter({call: n for call, n in calls.items()
                        if call[0].overloadpacket is torch.ops.aten.baddbmm_})
    assert in_place and products_alone(in_place, reps=1)[1] * 1e9 == sum(
        n * 2 * math.prod(args[1][0]) * args[2][0][-1] for (_, args, _), n in in_place.items())
