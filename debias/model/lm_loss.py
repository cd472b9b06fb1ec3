"""Next-token cross-entropy straight from the final hidden states, a chunk of tokens at a time.

The plain loss builds the logits [B, T, V] of the whole micro-batch and casts them to fp32: at
Pythia's vocabulary (50,304) a 16 x 2048 micro-batch holds 6.6 GB of fp32 logits, and as much
again for their gradient, more than every activation of a 160m model. Here the output layer and
the cross-entropy run over `chunk_tokens` tokens at a time. The loss is the last operation of the
step, so each chunk's gradients (w.r.t. the hidden states and the output weight) are computed at
once, in the forward pass; backward only scales them by the incoming gradient (1 / grad_accum,
and the loss scale under fp16). Extra memory: one chunk's logits, whatever the batch.

Numerics follow the plain path: logits computed in the compute dtype (the autocast dtype, else the
weights' dtype) with the matmul's fp32 accumulation, cross-entropy in fp32; the gradients are
summed over chunks in fp32 and divided by the token count only at the end, so fp16 never holds
1/N-sized values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Elements of one chunk's logits: 2^26 fp32 values = 256 MiB (1,280 tokens at Pythia's 50,304).
CHUNK_ELEMENTS = 2**26


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          chunk_tokens: int | None = None) -> torch.Tensor:
    """mean_i CE(hidden[i] @ weight.T, labels[i]) as an fp32 scalar.

    hidden [N, d] (the final LayerNorm's output), weight [V, d] (`embed_out.weight`), labels [N]
    (int64 ids below V). Equal to `F.cross_entropy((hidden @ weight.T).float(), labels)` within
    round-off, in value and in both gradients.
    """
    if chunk_tokens is None:
        chunk_tokens = max(256, CHUNK_ELEMENTS // weight.shape[0] // 256 * 256)
    return ChunkedCrossEntropy.apply(hidden, weight, labels, compute_dtype(hidden, weight), chunk_tokens)


def compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the output matmul runs in: autocast's when it is on, else the weights' own."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


class ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, dtype, chunk_tokens):
        num_tokens = hidden.shape[0]
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = None  # fp32, summed over chunks (the first chunk's product is taken as it is)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes below are explicit
            w = weight.to(dtype)
            for start in range(0, num_tokens, chunk_tokens):
                stop = min(start + chunk_tokens, num_tokens)
                h, target = hidden[start:stop].to(dtype), labels[start:stop]
                logits = F.linear(h, w).float()  # [c, V]
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, target[:, None]).squeeze(1)).sum()
                if need_hidden or need_weight:
                    # d(sum of CE)/d(logits) = softmax - one_hot(target), built in place in `logits`
                    probs = logits.sub_(lse[:, None]).exp_()
                    probs[torch.arange(stop - start, device=probs.device), target] -= 1.0
                    grad_logits = probs.to(dtype)
                    del logits, probs
                    if need_hidden:
                        grad_hidden[start:stop] = grad_logits @ w
                    if need_weight:
                        product = (grad_logits.t() @ h).float()
                        grad_weight = product if grad_weight is None else grad_weight.add_(product)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.num_tokens, ctx.hidden_dtype, ctx.weight_dtype = num_tokens, hidden.dtype, weight.dtype
        return total / num_tokens

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_output.float() / ctx.num_tokens
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(scale).to(ctx.hidden_dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(scale).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None
