"""The eager CPU step's matmul helpers and column sums (trainable/rows.py)."""

import torch
from test_fused import needs_compiler

from umtune.trainable.rows import column_sums


@needs_compiler
def test_bf16_column_sums_are_float32_sums_of_the_rows_and_the_same_every_call():
    """A slice of the channels of a (B, T, C) stream (rows evenly strided), as a bias's gradient
    is taken: kernels.c's sums against PyTorch's float32 sum, to float32 rounding."""
    torch.manual_seed(0)
    stream = torch.randn(3, 1001, 24).bfloat16()
    rows = stream[..., :10]
    got = column_sums(rows)
    assert got.dtype == torch.float32 and got.shape == (10,)
    torch.testing.assert_close(got, rows.sum((0, 1), dtype=torch.float32), rtol=1e-5, atol=1e-4)
    assert torch.equal(column_sums(rows), got)


def test_column_sums_of_rows_not_evenly_strided_are_pytorchs():
    torch.manual_seed(0)
    for x in (torch.randn(3, 50, 8).bfloat16()[:, ::2], torch.randn(4, 6),
              torch.randn(2, 5, 3).bfloat16().transpose(0, 1)):
        torch.testing.assert_close(column_sums(x), x.sum(tuple(range(x.dim() - 1)),
                                                        dtype=torch.float32))
