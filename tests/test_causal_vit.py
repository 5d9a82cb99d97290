"""The causal ViT of iLLaMA (attnbook.models.vit): the post-sequence class token and the soft mask (chapter 13)."""

from __future__ import annotations

import pytest
import torch

from attnbook.attention.core import AttentionCore, CausalPattern
from attnbook.models.vit import SoftCausalMask, ViT, set_soft_mask_rate, soft_mask_schedule


def causal_core() -> AttentionCore:
    return AttentionCore(pattern=CausalPattern())


def test_class_token_last_is_a_permutation_of_the_tokens():
    """Without a mask, putting the class token last changes nothing but the order (positions move with it)."""
    torch.manual_seed(0)
    first = ViT(8, 2, 1, 5, dim=16, depth=2, num_heads=2).eval()
    last = ViT(8, 2, 1, 5, dim=16, depth=2, num_heads=2, class_token="last").eval()
    last.load_state_dict(first.state_dict())
    with torch.no_grad():  # the class token's position embedding moves to the end
        last.pos_embed.copy_(torch.cat([first.pos_embed[:, 1:], first.pos_embed[:, :1]], dim=1))
        first.cls_token.normal_()
        last.cls_token.copy_(first.cls_token)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(last(x), first(x), rtol=1e-5, atol=1e-5)
    (_, wf), (_, wl) = first(x, need_weights=True), last(x, need_weights=True)
    order = torch.cat([torch.arange(1, 17), torch.tensor([0])])  # last's token t is first's token order[t]
    torch.testing.assert_close(wl[0], wf[0][:, :, order][:, :, :, order], rtol=1e-5, atol=1e-6)


def test_causal_front_class_token_ignores_the_image_and_a_last_one_sees_all_of_it():
    torch.manual_seed(1)
    front = ViT(8, 2, 1, 4, dim=16, depth=2, num_heads=2, core=causal_core).eval()
    x = torch.rand(5, 1, 8, 8)
    logits = front(x)
    torch.testing.assert_close(logits, logits[:1].expand(5, -1), rtol=0, atol=1e-6)  # the same for every image
    back = ViT(8, 2, 1, 4, dim=16, depth=2, num_heads=2, core=causal_core, class_token="last").eval()
    x.requires_grad_(True)
    back(x)[0].sum().backward()
    assert (x.grad[0].abs() > 0).all()  # every pixel of image 0 reaches its class token
    assert x.grad[1:].abs().max() == 0  # and nothing of the other images
    _, weights = back(x, need_weights=True)
    assert torch.equal(weights[0][0, 0] > 0, torch.ones(17, 17).tril().bool())  # causal: no weight on later tokens


def test_soft_mask_is_applied_after_the_softmax_without_renormalising():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    full = logits.softmax(-1)
    tril = torch.ones(5, 5, dtype=torch.float64).tril()
    for rate in (0.0, 0.3, 1.0):
        weights = SoftCausalMask(rate)(logits, None)
        torch.testing.assert_close(weights, full * (rate + (1 - rate) * tril), rtol=0, atol=1e-15)
    torch.testing.assert_close(SoftCausalMask(1.0)(logits, None), full)  # r = 1: bidirectional
    hard = SoftCausalMask(0.0)(logits, None)
    assert (hard.triu(1) == 0).all()  # r = 0: no weight on later keys ...
    sums = hard.sum(-1)
    assert torch.all(sums[..., :-1] < 1) and torch.allclose(sums[..., -1], torch.ones(2, 3, dtype=torch.float64))
    # ... but the rows are not renormalised: row i keeps only the share of its first i + 1 keys


def test_soft_mask_schedule_and_setter():
    rates = soft_mask_schedule(10, 4)
    assert rates[:4] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0]) and rates[4:] == [0.0] * 6
    assert soft_mask_schedule(3, 0) == [0.0, 0.0, 0.0] and soft_mask_schedule(2, 2, start=0.5) == [0.5, 0.0]
    model = ViT(8, 4, 1, 3, dim=8, depth=3, num_heads=2, core=lambda: AttentionCore(normalizer=SoftCausalMask(1.0)))
    assert set_soft_mask_rate(model, 0.25) == 3
    assert all(m.rate == 0.25 for m in model.modules() if isinstance(m, SoftCausalMask))
    with pytest.raises(ValueError, match="no SoftCausalMask"):
        set_soft_mask_rate(ViT(8, 4, 1, 3, dim=8, depth=1, num_heads=2), 0.5)
    with pytest.raises(ValueError, match="rate"):
        SoftCausalMask(1.5)
    with pytest.raises(ValueError, match="cutoff_steps"):
        soft_mask_schedule(3, 4)
    with pytest.raises(ValueError, match="class_token"):
        ViT(8, 4, 1, 3, class_token="middle")
