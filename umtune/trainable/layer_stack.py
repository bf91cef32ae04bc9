"""A decoder's gated layers in training as one autograd Function with its own backward.

Autograd's backward of the layers composed one by one carries the gradient of the whole
(B, T, R + S) stream through every layer: each layer zero-fills a gradient for its taps, adds
it to the stream's, and adds the skip channels' gradient, which no layer changes, once more.
Here the forward updates one stream in place (the res_skip output accumulated by the matmul
itself, the skip biases added once at the end) and keeps each layer's input (B, T, R) and
pre-activation (B, T, G) only: a step's activations outgrow the cache, so the backward reads
them from memory, and rewrites the taps from the input and the gate's output (in the gate's
backward pass) in cache. The backward keeps one gradient buffer for the stream, into which
each layer's taps add their gradient in place. It computes what `DecoderLayer` computes (a
test holds the two equal), for the eager CPU step: torch.compile, CUDA and float64 run the
layers as modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from umtune.trainable.gate import gate_backward_and_output, gate_forward
from umtune.trainable.native import MAX_CHANNELS, runs_on_kernels
from umtune.trainable.rows import column_sums, weight_grad
from umtune.trainable.taps import add_tap_grads, write_taps


def applies(sums: Tensor, gate_channels: int) -> bool:
    """Whether `layer_stack` runs for this stream (else the layers run as modules)."""
    return (not torch.compiler.is_compiling() and gate_channels <= MAX_CHANNELS
            and runs_on_kernels(sums))


def layer_stack(layers: nn.ModuleList, sums: Tensor, conds: list[Tensor]) -> Tensor:
    """The skip sum (B, T, S) after `layers` (DecoderLayers) from the stream sums (B, T, R + S),
    layer i conditioned by conds[i] (B, F, G) (its dilated conv's bias included).

    Every layer's weights go in as one tensor of each kind, cast once (a step runs ~75 small
    PyTorch ops a layer otherwise, each a few microseconds whatever its size)."""
    first = layers[0]
    shape = (first.dilated.in_channels, first.dilated.kernel_size[0],
             tuple(layer.dilation for layer in layers))
    dilated = torch.stack([layer.dilated.weight for layer in layers])  # (n, G, R, k)
    tensors = (torch.stack(conds).float(),  # (n, B, F, G), as the gate's kernels take it
               dilated.transpose(2, 3).flatten(2).to(sums.dtype),  # (n, G, k * R): taps_weight
               torch.stack([layer.res_skip.weight for layer in layers])[..., 0].to(sums.dtype),
               torch.stack([layer.res_skip.bias for layer in layers]).to(sums.dtype))
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in [sums, *tensors])
    return _LayerStack.apply(sums, shape, keep, *tensors)


class _LayerStack(torch.autograd.Function):

    @staticmethod
    def forward(ctx, sums: Tensor, shape: tuple, keep: bool, conds: Tensor, dilated: Tensor,
                res_skip: Tensor, bias: Tensor) -> Tensor:
        """keep: whether a backward will run (else nothing is kept for it: evaluation holds
        one layer's activations at a time, as the modules do)."""
        channels, kernel_size, dilations = shape
        sums = sums.clone(memory_format=torch.contiguous_format)  # updated in place from here
        rows = sums.view(-1, sums.shape[-1])
        # What no backward needs is written into the same buffers every layer, in cache.
        taps = sums.new_empty(*sums.shape[:2], kernel_size * channels)
        gated = sums.new_empty(*sums.shape[:2], dilated.shape[1] // 2)
        saved = []
        for i, dilation in enumerate(dilations):
            write_taps(sums, channels, kernel_size, dilation, (kernel_size - 1) * dilation, taps)
            h = torch.mm(taps.view(rows.shape[0], -1), dilated[i].t()).view(*sums.shape[:2], -1)
            gate_forward(h, conds[i], gated)
            torch.addmm(rows, gated.view(rows.shape[0], -1), res_skip[i].t(), out=rows)
            sums[..., :channels].add_(bias[i, :channels])
            if keep:
                saved += [taps[..., -channels:].clone(memory_format=torch.contiguous_format),
                          h]  # the last tap is x; taps is written again next layer
        skip = sums[..., channels:]
        skip.add_(bias[:, channels:].sum(0))  # the skip biases, once
        ctx.shape = shape
        ctx.save_for_backward(*saved, conds, dilated, res_skip)
        return skip

    @staticmethod
    def backward(ctx, grad_skip: Tensor):
        channels, kernel_size, dilations = ctx.shape
        n = len(dilations)
        *activations, conds, dilated, res_skip = ctx.saved_tensors
        B, T, skip = grad_skip.shape
        grad = grad_skip.new_zeros(B, T, channels + skip)  # the stream's gradient, in place
        grad[..., channels:] = grad_skip
        rows = grad.view(B * T, -1)
        grad_skip_bias = column_sums(grad_skip)
        grad_conds, grad_dilated, grad_res_skip, grad_bias = [], [], [], []
        gates = dilated.shape[1]  # the buffers every layer writes, in cache:
        taps, grad_taps = (grad.new_empty(B * T, kernel_size * channels) for _ in range(2))
        grad_gated, gated = (grad.new_empty(B * T, gates // 2) for _ in range(2))
        grad_h = grad.new_empty(B * T, gates)
        for i in reversed(range(n)):
            x, h = activations[2 * i:2 * i + 2]
            before = (kernel_size - 1) * dilations[i]
            write_taps(x, channels, kernel_size, dilations[i], before, taps.view(B, T, -1))
            grad_bias.append(column_sums(grad[..., :channels]))
            torch.mm(rows, res_skip[i], out=grad_gated)
            grad_conds.append(gate_backward_and_output(
                grad_gated.view(B, T, -1), h, conds[i], grad_h.view(B, T, -1), gated))
            grad_res_skip.append(weight_grad(gated, rows))
            grad_dilated.append(weight_grad(taps, grad_h))  # (G, kernel_size * channels)
            torch.mm(grad_h, dilated[i], out=grad_taps)
            add_tap_grads(grad, grad_taps.view(B, T, -1), kernel_size, dilations[i], before)
        grad_bias = torch.cat([torch.stack(grad_bias[::-1]),  # the skip part: every layer's
                               grad_skip_bias.expand(n, -1)], dim=1)
        return (grad, None, None, *(torch.stack(g[::-1]).to(t.dtype) for g, t in (
            (grad_conds, conds), (grad_dilated, dilated), (grad_res_skip, res_skip))),
                grad_bias.to(res_skip.dtype))
