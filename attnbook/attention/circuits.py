"""Circuits and editing: head outputs, discrete sparse autoencoders, ablation, causal tracing (chapter 26).

**A model small enough to take apart.** :class:`AttentionOnlyTransformer` is a causal transformer with attention
layers only -- token and learned position embeddings, ``L`` layers of ``H`` heads that add
``W_O^l [z^{l,1}; ...; z^{l,H}]`` to the residual stream, and a linear unembedding; no MLP and no LayerNorm, so every
path from a token to a logit goes through a head. The **head output** ``z^{l,h}_t = sum_s a^{l,h}_{ts} v^{l,h}_s``
(``(B, H, T, D)`` per layer, ``D = E / H``) is what the chapter hooks: the value mix of one head *before* the output
projection ``W_O`` mixes the heads, so head ``h`` writes ``W_O[:, hD:(h+1)D] z^{l,h}`` and zeroing ``z^{l,h}`` is the
same as zeroing that slice of ``W_O`` (:func:`ablate_heads`). **Mean ablation** (:func:`mean_ablate_heads`) puts
the head's mean output over reference prompts in its place instead (:func:`mean_head_outputs`): it removes what the
head says about *this* prompt and keeps what it says on every prompt, so the rest of the model is not fed a value
it never saw in training.

**Discrete sparse autoencoders** (O'Neill and Bui, *Sparse Autoencoders Enable Scalable and Reliable Circuit
Identification in Language Models*, 2024, ``oneill2024sparse``; their code ``charlieoneill11/sae-circuits``). One
autoencoder reads every head's output vector: ``f = ReLU(W_e (z - b) + c)`` with a tied pre-bias ``b`` (subtracted
before encoding, added back after decoding), ``z_hat = W_d f + b`` with unit-norm dictionary atoms (the columns of
``W_d``; :class:`DiscreteSAE`), trained on a handful of prompts with ``MSE + lambda * mean ||f||_1``
(:func:`train_sae`). The code of a head on a prompt is ``argmax_j f_j``, one integer. A head's **node score** is the
number of codes it shows on positive prompts and never on negative ones (a set difference, :func:`node_scores`);
heads that score high form the circuit (:func:`circuit_heads`).

**Causal tracing** (:func:`causal_trace`) runs a corrupted prompt, restores one head's clean output at one position,
and measures how much of the answer's probability comes back: where restoring one component recovers the answer,
the association is read there. **Editing** one association rewrites one output projection ``W_O`` with the
closed-form least-squares edit of chapter 18 (:func:`~attnbook.attention.conditioning.closed_form_edit`, imported,
not repeated; :func:`edit_output_projection`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.conditioning import closed_form_edit
from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.models.pointer import IGNORE_INDEX

__all__ = [
    "AttentionOnlyTransformer",
    "HeadHook",
    "train_circuit_model",
    "head_outputs",
    "ablate_heads",
    "mean_head_outputs",
    "mean_ablate_heads",
    "last_position_accuracy",
    "DiscreteSAE",
    "train_sae",
    "head_summary",
    "sae_codes",
    "node_scores",
    "circuit_heads",
    "causal_trace",
    "output_projection_inputs",
    "edit_output_projection",
]

#: ``hook(layer, z) -> z``: sees (and may replace) the head outputs ``z (B, H, T, D)`` of one layer before ``W_O``.
HeadHook = Callable[[int, Tensor], Tensor]


def _check_int(where: str, name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    return value


def _check_tokens(where: str, model: AttentionOnlyTransformer, tokens: object) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError(f"{where}: tokens must be a (B, T) long tensor, got {getattr(tokens, 'shape', tokens)!r}")
    if tokens.shape[1] > model.block_size:
        raise ValueError(f"{where}: tokens has T={tokens.shape[1]} > block_size={model.block_size}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= model.vocab_size):
        raise ValueError(f"{where}: token ids must lie in [0, {model.vocab_size})")
    return tokens


def _check_heads(where: str, model: AttentionOnlyTransformer, heads: object) -> list[tuple[int, int]]:
    try:
        pairs = [(int(layer), int(head)) for layer, head in heads]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: heads must be a sequence of (layer, head) pairs, got {heads!r}") from None
    for layer, head in pairs:
        if not (0 <= layer < model.num_layers and 0 <= head < model.num_heads):
            raise ValueError(
                f"{where}: head ({layer}, {head}) is outside the model's {model.num_layers} layers x "
                f"{model.num_heads} heads"
            )
    return pairs


class AttentionOnlyTransformer(nn.Module):
    """A causal attention-only transformer whose head outputs can be read and replaced (see the module).

    Args:
        vocab_size: ``V``; block_size: the longest prompt ``T`` (learned positions);
        embed_dim: ``E``, divisible by ``num_heads``; num_layers: ``L``; num_heads: ``H`` per layer.

    ``forward(tokens (B, T), head_hook=None) -> logits (B, T, V)``; ``head_hook(layer, z)`` receives the head
    outputs ``z (B, H, T, D)`` of each layer before its ``W_O`` and returns the ones to use.
    """

    def __init__(
        self, vocab_size: int, block_size: int, embed_dim: int = 64, num_layers: int = 2, num_heads: int = 4
    ) -> None:
        super().__init__()
        where = "AttentionOnlyTransformer"
        for name, value in (
            ("vocab_size", vocab_size),
            ("block_size", block_size),
            ("embed_dim", embed_dim),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            _check_int(where, name, value)
        if embed_dim % num_heads:
            raise ValueError(f"{where}: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.num_layers, self.num_heads, self.head_dim = num_layers, num_heads, embed_dim // num_heads
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.pos = nn.Parameter(0.02 * torch.randn(block_size, embed_dim))
        self.qkv = nn.ModuleList(nn.Linear(embed_dim, 3 * embed_dim, bias=False) for _ in range(num_layers))
        self.w_o = nn.ModuleList(nn.Linear(embed_dim, embed_dim, bias=False) for _ in range(num_layers))
        self.unembed = nn.Linear(embed_dim, vocab_size, bias=False)

    def head_qkv(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of layer ``layer`` for residual stream ``x (B, T, E)``: three ``(B, H, T, D)``."""
        B, T, _ = x.shape
        q, k, v = self.qkv[layer](x).view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, T, D)

    def forward(self, tokens: Tensor, head_hook: HeadHook | None = None) -> Tensor:
        tokens = _check_tokens("AttentionOnlyTransformer", self, tokens)
        B, T = tokens.shape
        x = self.embed(tokens) + self.pos[:T]  # (B, T, E): the residual stream
        for layer in range(self.num_layers):
            q, k, v = self.head_qkv(layer, x)
            z = scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D): head outputs, before W_O
            if head_hook is not None:
                z = head_hook(layer, z)
            x = x + self.w_o[layer](z.transpose(1, 2).reshape(B, T, -1))  # concat heads (B, T, H*D), then W_O
        return self.unembed(x)  # (B, T, V)


def train_circuit_model(
    model: AttentionOnlyTransformer,
    sample: Callable[[int], tuple[Tensor, Tensor]],
    *,
    steps: int,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
) -> list[float]:
    """Train ``model`` with AdamW on next-token cross-entropy; ``sample(step) -> (tokens, targets)`` gives each
    step's batch (targets ``-100`` where there is no answer). Returns the loss of every step."""
    _check_int("train_circuit_model", "steps", steps)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    for step in range(steps):
        tokens, targets = sample(step)
        logits = model(tokens)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def head_outputs(model: AttentionOnlyTransformer, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``model`` and hook every head before ``W_O``: returns ``(logits (B, T, V), z (B, L, H, T, D))``."""
    _check_tokens("head_outputs", model, tokens)
    seen: list[Tensor] = []

    def keep(layer: int, z: Tensor) -> Tensor:
        seen.append(z)
        return z

    logits = model(tokens, head_hook=keep)
    return logits, torch.stack(seen, dim=1)  # (B, L, H, T, D)


def ablate_heads(model: AttentionOnlyTransformer, tokens: Tensor, heads: Sequence[tuple[int, int]]) -> Tensor:
    """Logits ``(B, T, V)`` with the outputs of ``heads`` (``(layer, head)`` pairs) set to zero at every position
    (zero ablation: the same as zeroing those heads' columns of ``W_O``)."""
    pairs = _check_heads("ablate_heads", model, heads)
    _check_tokens("ablate_heads", model, tokens)
    return _replace_heads(model, tokens, pairs, lambda layer, chosen, T: 0.0)


def _replace_heads(
    model: AttentionOnlyTransformer,
    tokens: Tensor,
    pairs: list[tuple[int, int]],
    value: Callable[[int, list[int], int], Tensor | float],
) -> Tensor:
    """Logits with the outputs of the heads ``pairs`` of each layer set to ``value(layer, heads, T)`` (broadcast to
    ``(B, len(heads), T, D)``): the one hook behind zero and mean ablation."""
    T = tokens.shape[1]

    def replace(layer: int, z: Tensor) -> Tensor:
        chosen = [h for lay, h in pairs if lay == layer]
        if not chosen:
            return z
        new = value(layer, chosen, T)
        z = z.clone()
        z[:, chosen] = new.to(z.dtype) if isinstance(new, Tensor) else new
        return z

    return model(tokens, head_hook=replace)


@torch.no_grad()
def mean_head_outputs(model: AttentionOnlyTransformer, tokens: Tensor) -> Tensor:
    """Every head's output averaged over the prompts ``tokens (B, T)``, position by position: ``(L, H, T, D)``,
    the reference values of :func:`mean_ablate_heads`."""
    _check_tokens("mean_head_outputs", model, tokens)
    if tokens.shape[0] == 0:
        raise ValueError("mean_head_outputs: tokens must hold at least one prompt, got B=0")
    return head_outputs(model, tokens)[1].mean(0)  # (B, L, H, T, D) -> (L, H, T, D)


def mean_ablate_heads(
    model: AttentionOnlyTransformer, tokens: Tensor, heads: Sequence[tuple[int, int]], means: Tensor
) -> Tensor:
    """Logits ``(B, T, V)`` with the output ``z^{l,h}_t`` of every head in ``heads`` (``(layer, head)`` pairs)
    replaced by its mean ``means[l, h, t]`` over reference prompts (mean ablation).

    Args:
        means: ``(L, H, T_ref, D)`` with ``T_ref >= T``, as :func:`mean_head_outputs` returns.
    """
    where = "mean_ablate_heads"
    pairs = _check_heads(where, model, heads)
    _check_tokens(where, model, tokens)
    T = tokens.shape[1]
    expected = (model.num_layers, model.num_heads, model.head_dim)
    if (
        not isinstance(means, Tensor)
        or means.ndim != 4
        or (means.shape[0], means.shape[1], means.shape[3]) != expected
        or means.shape[2] < T
    ):
        raise ValueError(
            f"{where}: means must be (L, H, T_ref, D) = ({expected[0]}, {expected[1]}, >= {T}, {expected[2]}), "
            f"got {tuple(getattr(means, 'shape', ()))}"
        )
    # (len(chosen), T, D), broadcast over the batch
    return _replace_heads(model, tokens, pairs, lambda layer, chosen, T: means[layer, chosen, :T])


def last_position_accuracy(logits: Tensor, answer: Tensor) -> float:
    """Fraction of prompts whose last-position argmax ``logits[:, -1]`` equals ``answer (B,)``."""
    if logits.ndim != 3 or answer.shape != logits.shape[:1]:
        raise ValueError(
            f"last_position_accuracy: logits must be (B, T, V) and answer (B,), got logits{tuple(logits.shape)} "
            f"and answer{tuple(answer.shape)}"
        )
    return (logits[:, -1].argmax(-1) == answer).float().mean().item()


class DiscreteSAE(nn.Module):
    """The sparse autoencoder of O'Neill and Bui (2024, ``oneill2024sparse``) on head outputs ``z (..., D)``.

    ``f = ReLU(W_e (z - b) + c)`` ``(..., K)``, ``z_hat = W_d f + b`` ``(..., D)``, with the tied pre-bias ``b``
    ``(D,)``, encoder ``W_e (K, D)`` and bias ``c (K,)``, and dictionary ``W_d (D, K)`` whose ``K`` atoms (columns)
    and encoder rows have unit norm (:meth:`renormalise_`). The *code* of an input is ``argmax_j f_j``
    (:meth:`codes`). ``forward(z) -> (f, z_hat)``.
    """

    def __init__(self, input_dim: int, num_features: int) -> None:
        super().__init__()
        _check_int("DiscreteSAE", "input_dim", input_dim)
        _check_int("DiscreteSAE", "num_features", num_features)
        self.input_dim, self.num_features = input_dim, num_features
        self.pre_bias = nn.Parameter(torch.zeros(input_dim))
        self.encoder = nn.Parameter(torch.randn(num_features, input_dim))
        self.encoder_bias = nn.Parameter(torch.zeros(num_features))
        self.decoder = nn.Parameter(torch.randn(input_dim, num_features))
        self.renormalise_()

    @torch.no_grad()
    def renormalise_(self) -> None:
        """Put the encoder's rows and the dictionary's atoms (the decoder's columns) back on the unit sphere."""
        self.encoder.div_(self.encoder.norm(dim=1, keepdim=True))
        self.decoder.div_(self.decoder.norm(dim=0, keepdim=True))

    def _check(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.ndim < 1 or z.shape[-1] != self.input_dim:
            raise ValueError(f"DiscreteSAE: z must be (..., {self.input_dim}), got {tuple(getattr(z, 'shape', ()))}")

    def encode(self, z: Tensor) -> Tensor:
        """``f = ReLU(W_e (z - b) + c)``: ``(..., D) -> (..., K)``."""
        self._check(z)
        return F.relu(F.linear(z - self.pre_bias, self.encoder, self.encoder_bias))

    def decode(self, f: Tensor) -> Tensor:
        """``z_hat = W_d f + b``: ``(..., K) -> (..., D)``."""
        return F.linear(f, self.decoder) + self.pre_bias

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        f = self.encode(z)
        return f, self.decode(f)

    def codes(self, z: Tensor) -> Tensor:
        """The discrete code ``argmax_j f_j`` of every input vector: ``(..., D) -> (...,)`` long."""
        return self.encode(z).argmax(-1)


def train_sae(
    sae: DiscreteSAE, activations: Tensor, *, steps: int = 500, lr: float = 1e-3, sparsity: float = 0.02
) -> list[float]:
    """Full-batch Adam on ``MSE(z_hat, z) + sparsity * mean_n ||f_n||_1`` over ``activations (..., D)`` (the
    authors' loss; their defaults: 500 steps, ``lr = 1e-3``, ``lambda = 0.02``), renormalising the dictionary after
    every step. Returns the loss of every step."""
    where = "train_sae"
    _check_int(where, "steps", steps)
    sae._check(activations)
    if not sparsity >= 0:
        raise ValueError(f"{where}: sparsity must be >= 0, got {sparsity!r}")
    data = activations.detach().reshape(-1, sae.input_dim)  # (N, D)
    optimiser = torch.optim.Adam(sae.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        f, z_hat = sae(data)
        loss = F.mse_loss(z_hat, data) + sparsity * f.abs().sum(-1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        sae.renormalise_()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def head_summary(z: Tensor, position: int | None = None) -> Tensor:
    """One vector per head and prompt: ``z (B, L, H, T, D) -> (B, L, H, D)``, at ``position``, or averaged over the
    positions when ``position`` is None (the authors' default, ``position="mean"``)."""
    if not isinstance(z, Tensor) or z.ndim != 5:
        raise ValueError(f"head_summary: z must be (B, L, H, T, D) head outputs, got {tuple(getattr(z, 'shape', ()))}")
    return z.mean(3) if position is None else z[:, :, :, position]


@torch.no_grad()
def sae_codes(sae: DiscreteSAE, z: Tensor, position: int | None = None) -> Tensor:
    """Codes of every head: ``z (B, L, H, T, D) -> (B, L, H)`` long, from :func:`head_summary`."""
    return sae.codes(head_summary(z, position))


def node_scores(positive: Tensor, negative: Tensor, *, normalise: bool = False) -> Tensor:
    """Node score of every head: the number of codes it shows on positive prompts and never on negative ones.

    Args:
        positive: codes ``(N_pos, L, H)``; negative: codes ``(N_neg, L, H)``.
        normalise: divide by the number of distinct codes the head shows at all (the authors' option).

    Returns:
        ``(L, H)`` float scores.
    """
    if positive.ndim != 3 or negative.ndim != 3 or positive.shape[1:] != negative.shape[1:]:
        raise ValueError(
            f"node_scores: positive and negative must be (N, L, H) with the same (L, H), got "
            f"{tuple(positive.shape)} and {tuple(negative.shape)}"
        )
    L, H = positive.shape[1:]
    scores = torch.zeros(L, H)
    for layer in range(L):
        for head in range(H):
            pos = set(positive[:, layer, head].tolist())
            neg = set(negative[:, layer, head].tolist())
            unique = len(pos - neg)
            scores[layer, head] = unique / len(pos | neg) if normalise else unique
    return scores


def circuit_heads(scores: Tensor, threshold: float) -> list[tuple[int, int]]:
    """The ``(layer, head)`` pairs whose node score is at least ``threshold``, highest score first."""
    if scores.ndim != 2:
        raise ValueError(f"circuit_heads: scores must be (L, H), got {tuple(scores.shape)}")
    order = scores.flatten().argsort(descending=True, stable=True)
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H) for i in order if scores.flatten()[i] >= threshold]


@torch.no_grad()
def causal_trace(
    model: AttentionOnlyTransformer, clean: Tensor, corrupted: Tensor, answer: Tensor
) -> tuple[Tensor, float, float]:
    """Restore one head's clean output at one position in the corrupted run; read the answer's probability.

    Args:
        clean, corrupted: prompts ``(B, T)`` that differ where the corruption is; answer: ``(B,)`` the clean answer.

    Returns:
        ``(restored (L, H, T), p_clean, p_corrupted)``: the mean probability of ``answer`` at the last position
        with head ``(l, h)`` restored at position ``t``, and the means of the clean and the corrupted runs.
    """
    where = "causal_trace"
    _check_tokens(where, model, clean)
    _check_tokens(where, model, corrupted)
    if clean.shape != corrupted.shape or answer.shape != clean.shape[:1]:
        raise ValueError(
            f"{where}: clean and corrupted must have the same (B, T) and answer (B,), got clean{tuple(clean.shape)}, "
            f"corrupted{tuple(corrupted.shape)}, answer{tuple(answer.shape)}"
        )

    def p_answer(logits: Tensor) -> float:
        return logits[:, -1].softmax(-1).gather(1, answer[:, None]).mean().item()

    logits_clean, z_clean = head_outputs(model, clean)  # z_clean (B, L, H, T, D)
    p_corrupted = p_answer(model(corrupted))
    T = clean.shape[1]
    restored = torch.zeros(model.num_layers, model.num_heads, T)
    for layer in range(model.num_layers):
        for head in range(model.num_heads):
            for t in range(T):

                def restore(lay: int, z: Tensor, layer: int = layer, head: int = head, t: int = t) -> Tensor:
                    if lay != layer:
                        return z
                    z = z.clone()
                    z[:, head, t] = z_clean[:, layer, head, t]
                    return z

                restored[layer, head, t] = p_answer(model(corrupted, head_hook=restore))
    return restored, p_answer(logits_clean), p_corrupted


@torch.no_grad()
def output_projection_inputs(model: AttentionOnlyTransformer, tokens: Tensor, layer: int, position: int = -1) -> Tensor:
    """The input ``k = [z^{l,1}; ...; z^{l,H}]`` ``(B, E)`` of layer ``layer``'s ``W_O`` at ``position``."""
    _check_int("output_projection_inputs", "layer", layer, 0)
    if layer >= model.num_layers:
        raise ValueError(f"output_projection_inputs: layer must be < {model.num_layers}, got {layer}")
    _, z = head_outputs(model, tokens)  # (B, L, H, T, D)
    return z[:, layer, :, position].flatten(1)  # (B, H*D)


def edit_output_projection(
    model: AttentionOnlyTransformer, layer: int, keys: Tensor, targets: Tensor, strength: float = 1e-3
) -> AttentionOnlyTransformer:
    """A copy of ``model`` whose layer-``layer`` ``W_O`` maps ``keys (n, E)`` to ``targets (n, E)`` as closely as the
    regularised least squares of :func:`~attnbook.attention.conditioning.closed_form_edit` allows."""
    _check_int("edit_output_projection", "layer", layer, 0)
    if layer >= model.num_layers:
        raise ValueError(f"edit_output_projection: layer must be < {model.num_layers}, got {layer}")
    edited = copy.deepcopy(model)
    with torch.no_grad():
        weight = edited.w_o[layer].weight
        weight.copy_(closed_form_edit(weight, keys, targets, strength=strength))
    return edited
