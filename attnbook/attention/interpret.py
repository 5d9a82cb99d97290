"""Reading a trained model's attention: head importance, attention against distance and against saliency (ch. 25).

Three questions about any model of the book whose attention is a
:class:`~attnbook.attention.core.MultiHeadAttention` (the ViT, the GPT, the encoder-decoder Transformers):

**Which heads matter?** A *gate* ``g_lh`` multiplies head ``h``'s output in layer ``l`` just before the output
projection, ``Concat(g_l1 z_1, ..., g_lH z_H) W^O`` with ``z_h = A_h V_h`` ``(B, T, D)``. All gates at 1 is the
model; ``g_lh = 0`` removes the head (pruning, the head-importance measure of the visual-analytics study of
:cite:`li2023how`) and leaves every other head's output untouched (:func:`ablate_heads`, :func:`head_ablation`).
Because ``z_h`` is linear in the weights ``A_h``, scaling the gate scales the weights, and the chain rule gives::

    dL/dg_lh = sum_(t, s) A_lh[t, s] * dL/dA_lh[t, s]                       (one number per example and head)

the gradient ("Taylor") head score of :cite:`li2023how` written with the attention weights, and the first-order
estimate of the loss change when the head is removed, ``L(g = 0) - L(g = 1) ~ -dL/dg``. :func:`head_gate_gradients`
computes it per example with gates, :func:`attention_weight_gradients` with the weights themselves (through
:func:`capture_attention`), so the identity can be checked.

**How far do heads look?** :func:`mean_attention_distance` is the attention-weighted mean of a distance between
query and key (:func:`token_distances` for a sequence; :func:`~attnbook.attention.rollout.patch_distances` for an
image's patch grid); :func:`attention_by_offset` is a causal head's mass at each offset ``t - s``.

**Does attention point at what the output depends on?** :func:`input_x_gradient` is the gradient saliency
``sum_e x[t, e] dy/dx[t, e]`` per token of an input ``x (B, T, E)`` (exact for a linear ``y``), to be compared with an
attention row by :func:`~attnbook.attention.readout.row_correlation` and
:func:`~attnbook.attention.readout.saliency_coverage` (the protocol of :cite:`papi2025crossattention`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, FunctionCore, MultiHeadAttention

__all__ = [
    "attention_layers",
    "head_gates",
    "ablate_heads",
    "head_ablation",
    "head_gate_gradients",
    "capture_attention",
    "attention_weight_gradients",
    "record_output",
    "input_x_gradient",
    "token_distances",
    "mean_attention_distance",
    "attention_by_offset",
]


def attention_layers(model: nn.Module) -> list[MultiHeadAttention]:
    """Every :class:`MultiHeadAttention` inside ``model``, in the order of ``model.modules()`` (layer order).

    Raises ``TypeError`` for a non-module, ``ValueError`` when there is none or when one is not ``batch_first``
    (the gates read the batch from the first axis) or when the layers have different numbers of heads.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"attention_layers: model must be an nn.Module, got {type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"attention_layers: {type(model).__name__} has no MultiHeadAttention module")
    if not all(m.batch_first for m in layers):
        raise ValueError("attention_layers: every MultiHeadAttention must be batch_first=True to gate its heads")
    heads = {m.num_heads for m in layers}
    if len(heads) != 1:
        raise ValueError(f"attention_layers: the layers have different numbers of heads {sorted(heads)}")
    return layers


@contextmanager
def head_gates(model: nn.Module, gates: Tensor) -> Iterator[list[MultiHeadAttention]]:
    """Multiply head ``h`` of layer ``l`` by ``gates[l, h]`` (or ``gates[b, l, h]`` per example) while inside.

    A forward pre-hook on each layer's ``out_proj`` scales the head's slice of the concatenated head outputs
    ``(B, T, H * D)``; the gates may require grad (:func:`head_gate_gradients`). Yields the gated layers.

    Args:
        model: a module containing :class:`MultiHeadAttention` layers (see :func:`attention_layers`).
        gates: ``(L, H)`` for the whole batch or ``(B, L, H)`` per example, floating point.
    """
    layers = attention_layers(model)
    L, H = len(layers), layers[0].num_heads
    if not isinstance(gates, Tensor) or not gates.is_floating_point():
        raise TypeError(f"head_gates: gates must be a floating-point tensor, got {gates!r:.60}")
    if gates.shape[-2:] != (L, H) or gates.ndim not in (2, 3):
        raise ValueError(f"head_gates: gates must be (L, H) = ({L}, {H}) or (B, {L}, {H}), got {tuple(gates.shape)}")

    def make_hook(layer: int, mha: MultiHeadAttention) -> Callable[[nn.Module, tuple[Tensor, ...]], tuple[Tensor]]:
        def gate(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor]:
            x = args[0]  # (B, T, H * D): the heads' outputs, concatenated
            B, T, _ = x.shape
            g = gates[layer] if gates.ndim == 2 else gates[:, layer]  # (H,) or (B, H)
            if g.ndim == 2 and g.shape[0] != B:
                raise ValueError(f"head_gates: gates hold {g.shape[0]} examples, the batch has {B}")
            g = g.reshape(-1, 1, H, 1).to(x.dtype)  # (1 or B, 1, H, 1)
            return ((x.reshape(B, T, H, mha.head_dim) * g).reshape(B, T, H * mha.head_dim),)

        return gate

    handles = [mha.out_proj.register_forward_pre_hook(make_hook(i, mha)) for i, mha in enumerate(layers)]
    try:
        yield layers
    finally:
        for handle in handles:
            handle.remove()


def _gates_without(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Tensor:
    layers = attention_layers(model)
    L, H = len(layers), layers[0].num_heads
    weight = next(iter(model.parameters()), None)
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    gates = torch.ones(L, H, dtype=dtype, device=None if weight is None else weight.device)
    for pair in heads:
        if (
            not isinstance(pair, (tuple, list))
            or len(pair) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in pair)
            or not (0 <= pair[0] < L and 0 <= pair[1] < H)
        ):
            raise ValueError(f"heads: each entry must be (layer, head) with layer < {L} and head < {H}, got {pair!r}")
        gates[pair[0], pair[1]] = 0.0
    return gates


@contextmanager
def ablate_heads(model: nn.Module, heads: Sequence[tuple[int, int]]) -> Iterator[None]:
    """Remove the ``(layer, head)`` pairs in ``heads`` (their outputs set to zero before ``out_proj``) while inside."""
    with head_gates(model, _gates_without(model, heads)):
        yield


def head_ablation(model: nn.Module, evaluate: Callable[[], float]) -> tuple[float, Tensor]:
    """``evaluate()`` with all heads, and with each head removed in turn: ``(base, (L, H))``.

    ``evaluate`` is any metric of the model (held-out accuracy, loss) that reads the model as it is when called.
    The importance of a head is the change, ``base - ablated`` for an accuracy, ``ablated - base`` for a loss.
    """
    if not callable(evaluate):
        raise TypeError(f"head_ablation: evaluate must be callable, got {type(evaluate).__name__}")
    layers = attention_layers(model)
    base = float(evaluate())
    ablated = torch.empty(len(layers), layers[0].num_heads, dtype=torch.float64)
    for layer in range(ablated.shape[0]):
        for head in range(ablated.shape[1]):
            with ablate_heads(model, [(layer, head)]):
                ablated[layer, head] = float(evaluate())
    return base, ablated


def _per_example_loss(losses: object, where: str) -> Tensor:
    if not isinstance(losses, Tensor) or losses.ndim != 1 or not losses.is_floating_point():
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"{where}: loss_fn must return per-example losses, a 1-D float tensor (B,), got {got}")
    return losses


def head_gate_gradients(model: nn.Module, loss_fn: Callable[[], Tensor], batch_size: int) -> Tensor:
    """The per-example gradient of the loss with respect to every head's gate, at all gates 1: ``(B, L, H)``.

    ``loss_fn()`` runs the model on a batch of ``batch_size`` examples and returns their losses ``(B,)``. Entry
    ``[b, l, h]`` is ``d loss_b / d g_lh = sum_(t, s) A_lh ⊙ d loss_b / d A_lh`` (module docstring): the Taylor head
    score of example ``b``. Its mean over examples estimates minus the loss change when the head is removed;
    ``.abs().mean(0)`` is the importance score of :cite:`michel2019sixteen`, as used by :cite:`li2023how`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"head_gate_gradients: batch_size must be a positive int, got {batch_size!r}")
    layers = attention_layers(model)
    weight = next(iter(model.parameters()))
    gates = torch.ones(batch_size, len(layers), layers[0].num_heads, dtype=weight.dtype, device=weight.device)
    gates.requires_grad_(True)
    with head_gates(model, gates):
        losses = _per_example_loss(loss_fn(), "head_gate_gradients")
        if losses.shape[0] != batch_size:
            raise ValueError(f"head_gate_gradients: loss_fn returned {losses.shape[0]} losses, batch_size={batch_size}")
        (grad,) = torch.autograd.grad(losses.sum(), gates)  # examples are independent: one pass gives every b
    return grad  # (B, L, H)


@contextmanager
def capture_attention(model: nn.Module) -> Iterator[list[Tensor]]:
    """Record every attention layer's weights ``(B, H, T_q, T_k)``, still in the autograd graph, while inside.

    Each layer's :class:`AttentionCore` runs its readable path (``backend="manual"``) inside the block, so the
    weights exist even where the model would use the fused kernel; a forward hook on its normaliser appends them,
    one tensor per attention call, in call order. The backends are restored on exit. A core that computes no
    weights (:class:`~attnbook.attention.core.FunctionCore`) raises ``ValueError``.
    """
    layers = attention_layers(model)
    cores = [mha.core for mha in layers]
    for core in cores:
        if not isinstance(core, AttentionCore) or isinstance(core, FunctionCore):
            raise ValueError(f"capture_attention: the core {type(core).__name__} computes no attention weights")
    captured: list[Tensor] = []
    saved = [core.backend for core in cores]
    handles = [core.normalizer.register_forward_hook(lambda m, a, out: captured.append(out)) for core in cores]
    for core in cores:
        core.backend = "manual"
    try:
        yield captured
    finally:
        for core, backend in zip(cores, saved, strict=True):
            core.backend = backend
        for handle in handles:
            handle.remove()


def attention_weight_gradients(model: nn.Module, loss_fn: Callable[[], Tensor]) -> Tensor:
    """The Taylor head score from the attention weights: ``sum_(t, s) A ⊙ d loss_b / d A`` per example, ``(B, L, H)``.

    ``loss_fn()`` runs the model once and returns per-example losses ``(B,)``. Equal to
    :func:`head_gate_gradients` (the gate scales ``A_h V_h``, so it scales ``A_h``); slower, as it needs the weights.
    """
    with capture_attention(model) as weights:
        losses = _per_example_loss(loss_fn(), "attention_weight_gradients")
    if not weights:
        raise ValueError("attention_weight_gradients: loss_fn ran no attention layer of the model")
    grads = torch.autograd.grad(losses.sum(), weights)
    return torch.stack([(a * g).sum(dim=(-2, -1)) for a, g in zip(weights, grads, strict=True)], dim=1)  # (B, L, H)


@contextmanager
def record_output(module: nn.Module) -> Iterator[list[Tensor]]:
    """Record ``module``'s output (in the autograd graph) on every call while inside: e.g. a model's embeddings."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"record_output: module must be an nn.Module, got {type(module).__name__}")
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def input_x_gradient(output: Tensor, inputs: Tensor) -> Tensor:
    """Gradient saliency per token: ``sum_e x[b, t, e] * d output_b / d x[b, t, e]``, ``(B,), (B, T, E) -> (B, T)``.

    ``inputs`` must be in the graph of ``output`` (e.g. recorded by :func:`record_output`), and example ``b``'s
    output must depend on example ``b``'s inputs only (true without batch statistics), so that one backward pass of
    ``output.sum()`` gives every example's gradient. For a linear ``y = sum w ⊙ x`` it is ``sum_e w x`` exactly.
    Signed; take ``.abs()`` for a relevance mass (:func:`~attnbook.attention.readout.saliency_coverage`).
    """
    if not isinstance(output, Tensor) or not isinstance(inputs, Tensor):
        raise TypeError("input_x_gradient: output and inputs must be torch.Tensors")
    if inputs.ndim != 3 or not inputs.is_floating_point():
        raise ValueError(f"input_x_gradient: inputs must be a float tensor (B, T, E), got shape {tuple(inputs.shape)}")
    if output.shape != inputs.shape[:1]:
        raise ValueError(
            f"input_x_gradient: output must hold one number per example, shape ({inputs.shape[0]},), "
            f"got {tuple(output.shape)}"
        )
    if not inputs.requires_grad:
        raise ValueError("input_x_gradient: inputs are not in the autograd graph (requires_grad is False)")
    (grad,) = torch.autograd.grad(output.sum(), inputs, retain_graph=True)  # (B, T, E)
    return (inputs * grad).sum(-1).detach()  # (B, T)


def token_distances(length: int, *, device: torch.device | None = None) -> Tensor:
    """``|t - s|`` for the positions of a sequence of ``length`` tokens, ``(T, T)`` float64."""
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"token_distances: length must be a positive int, got {length!r}")
    pos = torch.arange(length, device=device, dtype=torch.float64)
    return (pos[:, None] - pos[None, :]).abs()  # (T, T)


def mean_attention_distance(weights: Tensor, distances: Tensor) -> Tensor:
    """Each head's attention-weighted mean query-key distance, averaged over examples and queries: ``(H,)``.

    ``sum_s A[b, h, t, s] d[t, s] / sum_s A[b, h, t, s]`` (rows renormalised, so a block of the weights, e.g. the
    patch-to-patch block of a ViT without its class token, can be passed), then the mean over ``b`` and ``t``.

    Args:
        weights: ``(B, H, T_q, T_k)`` non-negative attention weights.
        distances: ``(T_q, T_k)``, e.g. :func:`token_distances` or
            :func:`~attnbook.attention.rollout.patch_distances`.
    """
    if not isinstance(weights, Tensor) or weights.ndim != 4 or not weights.is_floating_point():
        got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"mean_attention_distance: weights must be a float tensor (B, H, T_q, T_k), got {got}")
    if not isinstance(distances, Tensor) or tuple(distances.shape) != tuple(weights.shape[-2:]):
        got = tuple(distances.shape) if isinstance(distances, Tensor) else type(distances).__name__
        expected = tuple(weights.shape[-2:])
        raise ValueError(f"mean_attention_distance: distances must be (T_q, T_k) = {expected}, got {got}")
    w = weights.detach().double()  # (B, H, T_q, T_k)
    mass = w.sum(-1).clamp_min(torch.finfo(torch.float64).tiny)  # (B, H, T_q)
    per_query = (w * distances.to(w)).sum(-1) / mass  # (B, H, T_q)
    return per_query.mean(dim=(0, 2))  # (H,)


def attention_by_offset(weights: Tensor) -> Tensor:
    """A causal head's mean weight on the key ``d`` tokens back, ``d = 0 .. T - 1``: ``(B, H, T, T) -> (H, T)``.

    Entry ``[h, d]`` averages ``A[b, h, t, t - d]`` over examples and over the queries ``t >= d`` that have such a
    key. Uniform causal attention gives ``mean_(t >= d) 1 / (t + 1)``, which falls with ``d`` by itself: compare
    a trained head with that profile (pass uniform weights), not with a constant.
    """
    if not isinstance(weights, Tensor) or weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        got = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"attention_by_offset: weights must be (B, H, T, T) self-attention, got {got}")
    T = weights.shape[-1]
    w = weights.detach().double().mean(0)  # (H, T, T)
    return torch.stack([w.diagonal(offset=-d, dim1=-2, dim2=-1).mean(-1) for d in range(T)], dim=-1)  # (H, T)
