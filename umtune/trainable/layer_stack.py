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

from umtune.trainable.gate import gate_backward_and_output, gate_op
from umtune.trainable.native import MAX_CHANNELS, runs_on_kernels
from umtune.trainable.rows import add_linear_, column_sums, linear, weight_grad
from umtune.trainable.taps import add_tap_grads, taps_weight, write_taps


def applies(sums: Tensor, gate_channels: int) -> bool:
    """Whether `layer_stack` runs for this stream (else the layers run as modules)."""
    return (not torch.compiler.is_compiling() and gate_channels <= MAX_CHANNELS
            and runs_on_kernels(sums))


def layer_stack(layers: nn.ModuleList, sums: Tensor, conds: list[Tensor]) -> Tensor:
    """The skip sum (B, T, S) after `layers` (DecoderLayers) from the stream sums (B, T, R + S),
    layer i conditioned by conds[i] (B, F, G) (its dilated conv's bias included)."""
    first = layers[0]
    shape = (first.dilated.in_channels, first.dilated.kernel_size[0],
             tuple(layer.dilation for layer in layers))
    tensors = [c.to(sums.dtype) for c in conds] + [
        w.to(sums.dtype) for layer in layers
        for w in (layer.dilated.weight, layer.res_skip.weight, layer.res_skip.bias)]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in [sums, *tensors])
    return _LayerStack.apply(sums, shape, keep, *tensors)


class _LayerStack(torch.autograd.Function):

    @staticmethod
    def forward(ctx, sums: Tensor, shape: tuple, keep: bool, *tensors: Tensor) -> Tensor:
        """keep: whether a backward will run (else nothing is kept for it: evaluation holds
        one layer's activations at a time, as the modules do)."""
        channels, kernel_size, dilations = shape
        n = len(dilations)
        conds, weights = tensors[:n], tensors[n:]
        sums = sums.clone()  # updated in place from here
        saved = []
        for i, (dilation, cond) in enumerate(zip(dilations, conds, strict=True)):
            dilated, res_skip, bias = weights[3 * i:3 * i + 3]
            taps = write_taps(sums, channels, kernel_size, dilation, (kernel_size - 1) * dilation)
            h = linear(taps, taps_weight(dilated))
            gated = gate_op(h, cond)
            add_linear_(sums, gated, res_skip[:, :, 0])
            sums[..., :channels].add_(bias[:channels])
            if keep:
                saved += [taps[..., -channels:].contiguous(), h]  # the last tap is x
        skip = sums[..., channels:]
        skip.add_(sum(weights[3 * i + 2][channels:] for i in range(n)))  # the skip biases, once
        ctx.shape = shape
        ctx.save_for_backward(*saved, *tensors)
        return skip

    @staticmethod
    def backward(ctx, grad_skip: Tensor):
        channels, kernel_size, dilations = ctx.shape
        n = len(dilations)
        saved = ctx.saved_tensors
        activations, conds, weights = saved[:2 * n], saved[2 * n:3 * n], saved[3 * n:]
        B, T, skip = grad_skip.shape
        grad = grad_skip.new_zeros(B, T, channels + skip)  # the stream's gradient, in place
        grad[..., channels:] = grad_skip
        grad_skip_bias = column_sums(grad_skip)
        grad_conds, grad_weights = [None] * n, [None] * (3 * n)
        for i in reversed(range(n)):
            x, h = activations[2 * i:2 * i + 2]
            before = (kernel_size - 1) * dilations[i]
            taps = write_taps(x, channels, kernel_size, dilations[i], before)
            dilated, res_skip, bias = weights[3 * i:3 * i + 3]
            grad_bias = torch.cat([column_sums(grad[..., :channels]), grad_skip_bias])
            grad_h, grad_cond, gated = gate_backward_and_output(
                linear(grad, res_skip[:, :, 0].t()), h, conds[i])
            grad_res_skip = weight_grad(gated, grad)[:, :, None]
            grad_dilated = weight_grad(taps, grad_h)  # (G, kernel_size * channels)
            grad_taps = linear(grad_h, taps_weight(dilated).t())
            add_tap_grads(grad, grad_taps, kernel_size, dilations[i], before)
            grad_conds[i] = grad_cond.to(conds[i].dtype)
            grad_weights[3 * i:3 * i + 3] = [
                grad_dilated.unflatten(1, (kernel_size, channels)).transpose(1, 2)
                .to(dilated.dtype), grad_res_skip.to(res_skip.dtype), grad_bias.to(bias.dtype)]
        return grad, None, None, *grad_conds, *grad_weights

