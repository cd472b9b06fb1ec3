"""The training loss without whole-batch logits (debias.model.lm_loss) against the plain fp32
cross-entropy, and compiled blocks against eager ones. CPU, tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from debias.model import GPTNeoX, GPTNeoXConfig, chunked_cross_entropy

TINY = GPTNeoXConfig(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=128,
                     max_position_embeddings=32)


def plain_loss(hidden, weight, labels):
    return F.cross_entropy((hidden @ weight.t()).float(), labels)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("chunk_tokens", [1, 7, 64, 10_000])  # one token, ragged last chunk, exact, one chunk
def test_chunked_loss_and_gradients_equal_the_plain_fp32_loss(chunk_tokens):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, 32, generator=generator)
    weight = torch.randn(96, 32, generator=generator) * 0.3
    labels = torch.randint(0, 96, (64,), generator=generator)
    h1, w1 = leaves(hidden, weight)
    h2, w2 = leaves(hidden, weight)
    expected = plain_loss(h1, w1, labels)
    expected.backward()
    loss = chunked_cross_entropy(h2, w2, labels, chunk_tokens=chunk_tokens)
    (loss * 3.0).backward()  # the incoming gradient (1/grad_accum, a loss scale) scales both gradients
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h2.grad, 3.0 * h1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(w2.grad, 3.0 * w1.grad, rtol=1e-5, atol=1e-7)


def test_chunked_loss_under_bf16_autocast_matches_the_plain_autocast_path():
    """Under autocast the output matmul runs in bf16 in both; the cross-entropy stays fp32."""
    generator = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(48, 32, generator=generator), torch.randn(96, 32, generator=generator) * 0.3
    labels = torch.randint(0, 96, (48,), generator=generator)
    h1, w1 = leaves(hidden, weight)
    h2, w2 = leaves(hidden, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(h1, w1).float(), labels)
        loss = chunked_cross_entropy(h2, w2, labels, chunk_tokens=16)
    expected.backward()
    loss.backward()
    assert w2.grad.dtype == torch.float32 and h2.grad.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(w2.grad, w1.grad, rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(h2.grad, h1.grad, rtol=2e-2, atol=2e-3)
    fp32 = plain_loss(hidden, weight, labels)
    assert abs(loss.item() - fp32.item()) > 0  # bf16 did change the logits: the test compares like with like


def test_model_loss_equals_cross_entropy_of_its_logits_in_value_and_every_gradient():
    torch.manual_seed(0)
    model = GPTNeoX(TINY).train()
    reference = GPTNeoX(TINY).train()
    reference.load_state_dict(model.state_dict())
    rows = torch.randint(0, 96, (3, 25), generator=torch.Generator().manual_seed(2))
    ids, labels = rows[:, :-1], rows[:, 1:]  # non-contiguous views, as the trainer passes them
    loss = model(ids, labels)
    expected = F.cross_entropy(reference(ids).float().flatten(0, 1), labels.flatten())
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_no_gradient_is_computed_without_autograd():
    model = GPTNeoX(TINY)
    with torch.no_grad():
        loss = model(torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))
    assert loss.grad_fn is None and torch.isfinite(loss)


def test_compiled_blocks_agree_with_eager_and_keep_their_names():
    """torch.compile of each block (regional compilation; inductor compiles C++ on CPU)."""
    torch.manual_seed(3)
    eager = GPTNeoX(TINY).train()
    compiled = GPTNeoX(TINY).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()
    assert compiled.blocks_compiled and list(compiled.state_dict()) == list(eager.state_dict())
    rows = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(4))
    losses = []
    for model in (eager, compiled):
        losses.append(model(rows[:, :-1], rows[:, 1:]))
        losses[-1].backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    compiled.uncompile_blocks()
    assert not compiled.blocks_compiled
