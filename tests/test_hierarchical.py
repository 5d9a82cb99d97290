"""SMITH's hierarchical encoder and MEDUSA's gated CNN (chapter 11): exact limits, masks, loss and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnbook.models.hierarchical import (
    BlockEncoder,
    DocumentEncoder,
    MultiScaleGatedCNN,
    SmithEncoder,
    greedy_sentence_blocks,
    hierarchical_score_count,
    masked_block_loss,
)

F64 = torch.float64


def documents(B=3, n=4, b=6, vocab=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab, (B, n, b), generator=gen)
    lengths = torch.randint(1, b + 1, (B, n), generator=gen)
    mask = torch.arange(b)[None, None, :] < lengths[..., None]  # (B, n, b)
    return tokens * mask, mask


def test_greedy_blocks_pack_and_cut():
    tokens, mask = greedy_sentence_blocks([[1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11, 12, 13]], block_length=4)
    assert tokens.tolist() == [[1, 2, 0, 0], [3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 0]]
    assert mask.sum().item() == 13
    tokens, _ = greedy_sentence_blocks([[1], [2], [3]], block_length=1, max_blocks=2)
    assert tokens.tolist() == [[1], [2]]


def test_one_block_document_is_the_block_encoders_path():
    torch.manual_seed(0)
    model = SmithEncoder(vocab_size=20, d_model=16, block_length=6, max_blocks=4).double()
    tokens, mask = documents(B=3, n=1)
    block = model.blocks(tokens[:, 0], mask[:, 0])  # (B, D)
    # one block: the document encoder sees one vector; its mean pool is its own output
    expected = model.document.norm(model.document.layers[0](block[:, None] + model.document.position[:1]))[:, 0]
    torch.testing.assert_close(model(tokens, mask), expected, rtol=0, atol=1e-12)


def test_block_encoder_equals_flat_attention_with_block_diagonal_mask():
    torch.manual_seed(1)
    encoder = BlockEncoder(vocab_size=20, d_model=16, block_length=6, num_heads=2, num_layers=2).double()
    tokens, mask = documents(B=1, n=5)
    per_block = encoder(tokens[0], mask[0])
    torch.testing.assert_close(encoder.encode_flat(tokens[0], mask[0]), per_block, rtol=0, atol=1e-12)


def test_document_vector_ignores_padding_blocks():
    torch.manual_seed(2)
    model = SmithEncoder(vocab_size=20, d_model=16, block_length=6, max_blocks=6).double()
    tokens, mask = documents(B=2, n=3)
    padded_tokens = torch.cat([tokens, torch.zeros(2, 2, 6, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 2, 6, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(padded_tokens, padded_mask), model(tokens, mask), rtol=0, atol=1e-12)


def test_masked_block_loss_brute_force():
    gen = torch.Generator().manual_seed(3)
    pred, target = torch.randn(7, 5, generator=gen, dtype=F64), torch.randn(7, 5, generator=gen, dtype=F64)
    brute = 0.0
    for i in range(7):
        scores = [float(pred[i] @ target[j]) for j in range(7)]
        top = max(scores)
        brute += -(scores[i] - top - torch.log(torch.tensor(scores, dtype=F64).sub(top).exp().sum()).item())
    assert abs(masked_block_loss(pred, target).item() - brute / 7) < 1e-12


def test_model_masked_block_loss_gathers_hidden_blocks():
    torch.manual_seed(4)
    model = SmithEncoder(vocab_size=20, d_model=16, block_length=6, max_blocks=4).double()
    tokens, mask = documents(B=2, n=4)
    hidden = torch.zeros(2, 4, dtype=torch.bool)
    hidden[0, 1] = hidden[1, 3] = hidden[1, 0] = True
    vectors, block_mask = model.block_vectors(tokens, mask)
    inputs = vectors.clone()
    inputs[hidden] = model.mask_vector
    outputs, _ = model.document(inputs, block_mask)
    expected = F.cross_entropy(outputs[hidden] @ vectors[hidden].T, torch.arange(3))
    torch.testing.assert_close(model.masked_block_loss(tokens, mask, hidden), expected)
    loss = model.masked_block_loss(tokens, mask, hidden)
    loss.backward()
    assert model.mask_vector.grad is not None and model.mask_vector.grad.abs().sum() > 0


def test_match_is_cosine_and_symmetric():
    torch.manual_seed(5)
    model = SmithEncoder(vocab_size=20, d_model=16, block_length=6, max_blocks=4).double()
    a, ma = documents(B=2, n=3, seed=1)
    b, mb = documents(B=2, n=4, seed=2)
    score = model.match(a, ma, b, mb)
    torch.testing.assert_close(score, model.match(b, mb, a, ma))
    torch.testing.assert_close(model.match(a, ma, a, ma), torch.ones(2, dtype=F64))
    assert score.shape == (2,)


def test_score_count():
    assert hierarchical_score_count(512, 32) == (512**2, 512 * 32 + 16**2)
    assert hierarchical_score_count(10, 10) == (100, 101)


def test_medusa_identity_gates_give_the_plain_cnn():
    torch.manual_seed(6)
    model = MultiScaleGatedCNN(in_channels=1, num_classes=3).double()
    x = torch.randn(2, 1, 16, 16, dtype=F64)
    gates = model.gates(x)
    assert [tuple(g.shape) for g in gates] == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 32, 2, 2)]
    assert all(((g > 0) & (g < 1)).all() for g in gates)
    ones = [torch.ones_like(g) for g in gates]
    torch.testing.assert_close(model(x, ones), model.plain(x), rtol=0, atol=0)
    assert (model(x) - model.plain(x)).abs().max() > 1e-6  # the computed gates do change the output


def test_medusa_gates_share_one_body():
    torch.manual_seed(7)
    model = MultiScaleGatedCNN(in_channels=1, num_classes=2).double()
    x = torch.randn(1, 1, 16, 16, dtype=F64)
    phi = model.body(x)
    for s, gate in enumerate(model.gates(x)):
        side = 16 // 2 ** (s + 1)
        brute = torch.sigmoid(model.heads[s](F.interpolate(phi, size=(side, side), mode="bilinear")))
        torch.testing.assert_close(gate, brute)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: greedy_sentence_blocks([[1]], block_length=0), "block_length"),
        (lambda: greedy_sentence_blocks([[1], []], block_length=3), "sentence 1 is empty"),
        (lambda: masked_block_loss(torch.randn(3, 4), torch.randn(2, 4)), "predicted and targets"),
        (
            lambda: BlockEncoder(10, 8, 4)(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool)),
            r"\(N, 4\)",
        ),
        (lambda: DocumentEncoder(8, 2)(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool)), "n <= 2"),
        (lambda: DocumentEncoder(8, 4)(torch.randn(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool)), "at least one"),
        (lambda: MultiScaleGatedCNN(1, 2)(torch.randn(1, 1, 12, 12)), "multiples of 8"),
        (lambda: MultiScaleGatedCNN(1, 2)(torch.randn(1, 3, 16, 16)), r"\(B, 1, H, W\)"),
        (lambda: hierarchical_score_count(0, 4), "positive"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_hidden_padding_block_is_an_error():
    model = SmithEncoder(vocab_size=20, d_model=8, block_length=6, max_blocks=4)
    tokens, mask = documents(B=1, n=2)
    mask[0, 1] = False
    with pytest.raises(ValueError, match="padding block"):
        model.masked_block_loss(tokens, mask, torch.tensor([[False, True]]))
