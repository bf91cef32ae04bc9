"""The decoders' gate as custom ops (kernels.c on the CPU): the same function and gradients as
PyTorch's ops, kept whole by torch.compile, and PyTorch's ops where the C kernel cannot be
built."""

import pytest
import torch
from test_fused import needs_compiler

from umtune.trainable import gate as gate_module
from umtune.trainable import native
from umtune.trainable.gate import gate, reference_gate


def _inputs(dtype, B=2, frames=4, pool=25, G=40):
    torch.manual_seed(0)
    h = (3 * torch.randn(B, frames * pool, G)).to(dtype).requires_grad_()
    cond = torch.randn(B, frames, G).to(dtype).requires_grad_()
    return h, cond, torch.randn(B, frames * pool, G // 2).to(dtype)


def _value_and_grads(fn, h, cond, grad):
    out = fn(h, cond)
    return [out, *torch.autograd.grad(out, (h, cond), grad)]


@needs_compiler
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_the_kernel_computes_the_gate_and_its_gradients(dtype, tol):
    """Against the float64 reference: float32 to rounding, bf16 within its 8-bit mantissa
    (the frame sums of the conditioning's gradient scaled by their size)."""
    h, cond, grad = _inputs(dtype)
    got = _value_and_grads(gate, h, cond, grad)
    expected = _value_and_grads(reference_gate, *(t.detach().double().requires_grad_()
                                                  for t in (h, cond)), grad.double())
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        scale = e.abs().max().item()
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol * scale)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_backward_gives_the_gates_output_back_where_asked(dtype):
    """`gate_backward_and_output`: the backward op's gradients and, written in the same pass,
    the forward's output (for a caller that did not keep it), into the caller's buffers."""
    h, cond, grad = (t.detach() for t in _inputs(dtype))
    grad_h, out = torch.full_like(h, float("nan")), torch.full_like(grad, float("nan"))
    grad_cond = gate_module.gate_backward_and_output(grad, h, cond, grad_h, out)
    assert torch.equal(out, gate_module.gate_op(h, cond))
    expected = gate_module.gate_backward_op(grad, h, cond)
    assert torch.equal(grad_h, expected[0]) and torch.equal(grad_cond, expected[1])


@needs_compiler
def test_the_custom_op_is_registered_for_autograd_and_the_compiler():
    h, cond, _ = _inputs(torch.float32)
    torch.library.opcheck(gate_module.gate_op, (h, cond))


@needs_compiler
def test_compiled_the_gate_keeps_its_values_and_gradients():
    h, cond, grad = _inputs(torch.float32)
    eager = _value_and_grads(gate, h, cond, grad)
    compiled = _value_and_grads(torch.compile(gate, fullgraph=True), h, cond, grad)
    for c, e in zip(compiled, eager, strict=True):
        torch.testing.assert_close(c, e)


def test_without_a_compiler_the_gate_runs_as_pytorch_ops(without_a_compiler):
    h, cond, grad = _inputs(torch.float32)
    got = _value_and_grads(gate, h, cond, grad)
    assert native.kernels() is None
    expected = _value_and_grads(reference_gate, h, cond, grad)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
