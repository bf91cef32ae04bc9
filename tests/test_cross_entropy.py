"""The decoders' cross-entropy as custom ops (kernels.c on the CPU): the same values and
gradients as F.cross_entropy, kept whole by torch.compile, PyTorch's ops where the C kernel
cannot be built, and a one-line error for a target outside the classes."""

import pytest
import torch
import torch.nn.functional as F
from test_fused import needs_compiler

from umtune.trainable import native
from umtune.trainable.cross_entropy import _cross_entropy, cross_entropy


def _inputs(dtype, rows=300, classes=256):
    torch.manual_seed(0)
    logits = (4 * torch.randn(rows, classes)).to(dtype).requires_grad_()
    target = torch.randint(0, classes, (rows,))
    target[:3] = torch.tensor([0, classes - 1, int(logits[2].argmax())])  # the edges, the top
    return logits, target, torch.randn(rows)


def _value_and_grad(fn, logits, target, grad):
    out = fn(logits, target)
    return [out, *torch.autograd.grad(out, logits, grad)]


def _reference(logits, target):
    return F.cross_entropy(logits.float(), target, reduction="none")


@needs_compiler
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_the_kernel_computes_the_cross_entropy_and_its_gradient(dtype, tol):
    """Against float64 F.cross_entropy: float32 to rounding, bf16 logits' gradient within its
    8-bit mantissa; the loss is float32, the gradient the logits' dtype."""
    logits, target, grad = _inputs(dtype)
    loss, grad_logits = _value_and_grad(cross_entropy, logits, target, grad)
    expected = _value_and_grad(lambda x, t: F.cross_entropy(x, t, reduction="none"),
                               logits.detach().double().requires_grad_(), target, grad.double())
    assert loss.dtype == torch.float32 and grad_logits.dtype == dtype
    for g, e in zip((loss, grad_logits), expected, strict=True):
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol * e.abs().max().item())


@needs_compiler
def test_the_custom_op_is_registered_for_autograd_and_the_compiler():
    logits, target, _ = _inputs(torch.float32)
    torch.library.opcheck(_cross_entropy, (logits, target))


@needs_compiler
def test_compiled_the_cross_entropy_keeps_its_values_and_gradient():
    logits, target, grad = _inputs(torch.float32)
    eager = _value_and_grad(cross_entropy, logits, target, grad)
    compiled = _value_and_grad(torch.compile(cross_entropy, fullgraph=True), logits, target,
                               grad)
    for c, e in zip(compiled, eager, strict=True):
        torch.testing.assert_close(c, e)


@needs_compiler
def test_a_target_outside_the_classes_is_refused():
    logits, target, _ = _inputs(torch.float32, classes=8)
    target[5] = 8
    with pytest.raises(IndexError, match=r"targets must lie in \[0, 8\), got \[0, 8\]"):
        cross_entropy(logits, target)


def test_without_a_compiler_the_cross_entropy_runs_as_pytorch_ops(without_a_compiler):
    logits, target, grad = _inputs(torch.float32)
    got = _value_and_grad(cross_entropy, logits, target, grad)
    assert native.kernels() is None
    for g, e in zip(got, _value_and_grad(_reference, logits, target, grad), strict=True):
        torch.testing.assert_close(g, e)
