"""A decoder's layers as one Function with its own backward (trainable/layer_stack.py): the
output and every gradient of the layers run as modules, in float32 and bf16."""

import copy
import subprocess
import sys

import pytest
import torch
from test_fused import needs_compiler

from umtune.config import DecoderConfig
from umtune.trainable import layer_stack
from umtune.trainable.model import WaveNetDecoder, codes_to_input


def _decoder(kernel_size: int) -> WaveNetDecoder:
    torch.manual_seed(0)
    cfg = DecoderConfig(blocks=2, layers_per_block=4, residual_channels=8, gate_channels=16,
                        skip_channels=6, kernel_size=kernel_size)  # dilations 1 .. 8, 1 .. 8
    return WaveNetDecoder(cfg, latent_channels=5, classes=32)


def _logits_and_grads(decoder: WaveNetDecoder, dtype: torch.dtype) -> list[torch.Tensor]:
    """Logits and the gradients of the latent and of every parameter, for a fixed loss."""
    torch.manual_seed(1)
    codes = torch.randint(0, 32, (3, 60))
    z = torch.randn(3, 5, 4).to(dtype).requires_grad_()
    weights = torch.randn(3, 32, 60).to(dtype)
    decoder = copy.deepcopy(decoder).to(dtype)
    logits = decoder(codes, z, codes_to_input(codes, 32).to(dtype))
    loss = (logits * weights).sum()
    return [logits, *torch.autograd.grad(loss, [z, *decoder.parameters()])]


@needs_compiler
@pytest.mark.parametrize("kernel_size", [2, 3])
def test_the_stack_computes_the_layers_and_their_gradients(kernel_size):
    """float32 against the layers as modules in float64 (the stack runs for float32 and bf16
    only), to rounding: every parameter of every layer gets its gradient (taps past the
    60-sample segment included: dilation 8 x 2)."""
    decoder = _decoder(kernel_size)
    assert layer_stack.applies(torch.zeros(1, 1, 14), 16)
    got = _logits_and_grads(decoder, torch.float32)
    expected = _logits_and_grads(decoder, torch.float64)  # the modules
    for g, e in zip(got, expected, strict=True):
        scale = e.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(g.double(), e, rtol=1e-5, atol=1e-5 * scale)


@needs_compiler
def test_in_bf16_the_stack_runs_in_bf16():
    """bf16: the logits within its 8-bit mantissa; the gradients in bf16 and finite (how far
    bf16 carries a tiny random decoder's gradients from float64 varies by seed, 1-40% in norm,
    for the modules as for the stack)."""
    decoder = _decoder(2)
    logits, *grads = _logits_and_grads(decoder, torch.bfloat16)
    expected = _logits_and_grads(decoder, torch.float64)[0]
    torch.testing.assert_close(logits.double(), expected, rtol=2e-2, atol=2e-2)
    assert all(g.dtype == torch.bfloat16 and g.isfinite().all() for g in grads)


@needs_compiler
def test_the_stack_leaves_its_input_stream_as_it_was():
    decoder = _decoder(2)
    sums = torch.randn(2, 40, 14)
    before = sums.clone()
    conds = [torch.randn(2, 4, 16) for _ in decoder.layers]
    layer_stack.layer_stack(decoder.layers, sums, conds)
    assert torch.equal(sums, before)


def test_without_a_compiler_the_layers_run_as_modules(without_a_compiler):
    assert not layer_stack.applies(torch.zeros(1, 1, 14), 16)


@needs_compiler
def test_without_gradients_the_stack_holds_one_layers_activations_at_a_time():
    """Evaluation (no gradients) keeps nothing for a backward: the peak memory of 8 layers over
    a long segment stays far below the eight layers' activations (~490 MB here; kept, the peak
    grew ~610 MB; the layers as modules grow it 100-260 MB). A fresh process: its peak
    resident memory is its own."""
    script = """
import resource, torch
from umtune.config import DecoderConfig
from umtune.trainable import layer_stack
from umtune.trainable.model import WaveNetDecoder
cfg = DecoderConfig(blocks=1, layers_per_block=8, residual_channels=8, gate_channels=16,
                    skip_channels=6)
decoder = WaveNetDecoder(cfg, latent_channels=5, classes=32)
sums, conds = torch.randn(1, 500_000, 14), [torch.randn(1, 1000, 16) for _ in range(8)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    layer_stack.layer_stack(decoder.layers, sums, conds)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    grown_mb = float(done.stdout.split()[-1])
    layer_mb = 500_000 * (8 + 16 + 8) * 4 / 2**20  # x, h and the gate's output, float32
    assert grown_mb < 6 * layer_mb, f"peak grew {grown_mb:.0f} MB"
