"""Pointer Networks: an LSTM encoder-decoder whose output distribution *is* its attention over the inputs (chapter 02).

*Pointer Networks*, Vinyals, Fortunato & Jaitly, 2015 (:cite:`vinyals2015pointer`). The encoder reads the inputs
``x_1..x_n`` into states ``e_j``; at output step ``i`` the decoder state ``d_i`` scores every input with the
additive score of :cite:`bahdanau2015neural`,

.. math::  u^i_j = v^\\top \\tanh(W_1 e_j + W_2 d_i), \\qquad
           p(C_i = j \\mid C_{<i}, P) = \\operatorname{softmax}_j(u^i_j),

and, instead of blending the ``e_j`` into a context, the softmax itself is the output: a distribution over
the ``n`` input positions, whatever ``n`` is. The decoder's next input is the chosen input ``x_{C_i}``.

API (what a training loop needs)::

    model = PointerNetwork(input_dim=2, hidden_dim=128, end_token=True)
    log_probs = model(inputs, targets, lengths=None)       # teacher forcing: (B, m, n + end_token)
    log_probs = model(inputs)                              # targets=None: scores the model's own greedy path
    loss = model.loss(log_probs, targets)                  # mean NLL over targets != IGNORE_INDEX
    indices = model.decode(inputs, lengths=None)           # greedy: (B, m_max) long, -1 after the end

Data: :func:`attnbook.data.pointer.sorting_task` / :func:`~attnbook.data.pointer.convex_hull_task` give
``(inputs, targets)`` of one length; ``DataLoader(PointerDataset(tasks), collate_fn=pad_pointer_batch)`` gives
``(inputs, targets, lengths)`` batches of mixed lengths, ready for ``model(inputs, targets, lengths)``.

* ``inputs (B, n, input_dim)`` float; ``lengths (B,)`` the number of real inputs per row (padding after them is
  never pointed at); ``targets (B, m)`` long, input indices in output order. With ``end_token=True`` the model
  has one more column, ``n`` (= ``inputs.shape[1]``), the **end symbol**: its key is a learned vector, and a
  target row ends with ``n`` followed by ``IGNORE_INDEX`` (-100), as :func:`attnbook.data.pointer.convex_hull_task`
  builds them. Without it (sorting) the output has exactly ``lengths[b]`` steps.
* **Masking** (in both ``forward`` and ``decode``): padded inputs, and inputs already output at an earlier step,
  get log-probability ``-inf`` (probability exactly 0). The end symbol is allowed once ``min_outputs`` inputs
  have been output, and is the only choice once every real input has been. A step with nothing left to choose
  (sorting, after the last input) is all ``-inf`` and its target must be ``IGNORE_INDEX``.
* ``decode`` returns ``(B, n)`` (or ``(B, n + 1)`` with the end symbol) indices into the inputs, ``-1`` from the
  end symbol (or the row's length) on; ``return_log_probs=True`` also returns the per-step log-probabilities
  ``(B, m, n + end_token)`` -- the pointer attention matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnbook.attention.additive import AdditiveAttention

__all__ = ["PointerNetwork", "masked_log_softmax", "pointer_loss", "IGNORE_INDEX"]

IGNORE_INDEX = -100


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """``log softmax`` over the last dim where ``mask`` is True, ``-inf`` (probability 0) elsewhere.

    A row with nothing allowed is all ``-inf`` (not NaN), and gradients stay finite.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"masked_log_softmax: mask must be bool (True = allowed), got {mask.dtype}")
    empty = ~mask.any(dim=-1, keepdim=True)  # (..., 1)
    work = logits.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    log_z = torch.logsumexp(work, dim=-1, keepdim=True)  # finite: every row has an allowed or a zeroed entry
    return (work - log_z).masked_fill(~mask, float("-inf"))


def pointer_loss(log_probs: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean negative log-likelihood of the ``targets (B, m)`` under ``log_probs (B, m, C)``, skipping ``ignore_index``.

    Raises if a target has probability 0 (it points at a padded or already-chosen input): teacher forcing
    with such a target is a data bug, not a large loss.
    """
    if log_probs.ndim != 3 or targets.shape != log_probs.shape[:2]:
        raise ValueError(
            f"pointer_loss: log_probs must be (B, m, C) and targets (B, m), got {tuple(log_probs.shape)} and "
            f"{tuple(targets.shape)}"
        )
    keep = targets != ignore_index
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, m)
    if torch.isneginf(picked[keep]).any():
        raise ValueError("pointer_loss: a target points at a masked (padded or already chosen) input")
    return F.nll_loss(log_probs.flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


class PointerNetwork(nn.Module):
    """Ptr-Net :cite:`vinyals2015pointer`: LSTM encoder, LSTM decoder, additive attention as the output pointer.

    Args:
        input_dim: width of one input element (1 for numbers to sort, 2 for planar points).
        hidden_dim: LSTM width, and the additive attention's width.
        end_token: add the end symbol (column ``n`` of the output) for outputs of variable length (convex hull).
        min_outputs: the end symbol may be chosen once this many inputs have been output (3: a polygon).
    """

    def __init__(self, input_dim: int = 2, hidden_dim: int = 128, end_token: bool = False, min_outputs: int = 3):
        super().__init__()
        for name, value in (("input_dim", input_dim), ("hidden_dim", hidden_dim), ("min_outputs", min_outputs)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PointerNetwork: {name} must be a positive int, got {value!r}")
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        self.end_token, self.min_outputs = bool(end_token), min_outputs
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.encoder = nn.LSTM(hidden_dim, hidden_dim, batch_first=True)
        self.decoder = nn.LSTM(hidden_dim, hidden_dim, batch_first=True)
        self.pointer = AdditiveAttention(hidden_dim, hidden_dim, hidden_dim)
        self.start = nn.Parameter(torch.randn(hidden_dim) * 0.1)  # the decoder's first input
        self.end_key = nn.Parameter(torch.randn(hidden_dim) * 0.1) if end_token else None

    # ----------------------------------------------------------------------------------------------- checks
    def _check(self, inputs: Tensor, lengths: Tensor | None) -> Tensor:
        """Validate inputs and lengths; return lengths ``(B,)`` (all ``n`` when not given)."""
        if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
            got = inputs.dtype if isinstance(inputs, Tensor) else type(inputs).__name__
            raise TypeError(f"PointerNetwork: inputs must be a floating tensor, got {got}")
        if inputs.ndim != 3 or inputs.shape[-1] != self.input_dim or inputs.shape[1] == 0:
            raise ValueError(
                f"PointerNetwork: inputs must have shape (B, n, input_dim={self.input_dim}) with n > 0, "
                f"got {tuple(inputs.shape)}"
            )
        B, n = inputs.shape[:2]
        if lengths is None:
            return torch.full((B,), n, dtype=torch.long, device=inputs.device)
        if not isinstance(lengths, Tensor) or lengths.shape != (B,) or lengths.is_floating_point():
            got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
            raise ValueError(f"PointerNetwork: lengths must be an integer tensor of shape (B,)=({B},), got {got}")
        if int(lengths.min()) < 1 or int(lengths.max()) > n:
            raise ValueError(f"PointerNetwork: lengths must lie in [1, n={n}], got {lengths.tolist()}")
        return lengths.to(device=inputs.device, dtype=torch.long)

    # ----------------------------------------------------------------------------------------------- pieces
    def encode(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Encoder states ``(B, n, H)`` (zeros on padding) and the final ``(h, c)``, each ``(1, B, H)``."""
        x = self.embed(inputs)  # (B, n, H)
        if bool((lengths == inputs.shape[1]).all()):
            return self.encoder(x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])  # (B, n, H)
        return out, state

    def keys(self, enc: Tensor) -> Tensor:
        """Pointer keys ``(B, n + end_token, H)``: the encoder states, then the end symbol's learned key."""
        if self.end_key is None:
            return enc
        return torch.cat([enc, self.end_key.expand(enc.shape[0], 1, -1)], dim=1)  # (B, n + 1, H)

    def step_mask(self, visited: Tensor, valid: Tensor, num_out: Tensor) -> Tensor:
        """Allowed columns ``(..., n + end_token)`` from ``visited``/``valid`` inputs ``(..., n)`` and ``num_out``
        (inputs output so far, ``(...)``)."""
        allowed = valid & ~visited  # (..., n)
        if not self.end_token:
            return allowed
        can_end = (num_out >= self.min_outputs) | ~allowed.any(dim=-1)  # (...)
        return torch.cat([allowed, can_end[..., None]], dim=-1)  # (..., n + 1)

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, inputs: Tensor, targets: Tensor | None = None, lengths: Tensor | None = None) -> Tensor:
        """Teacher-forced log-probabilities ``(B, m, n + end_token)``, masked as the module docstring says.

        With ``targets=None`` the targets are the model's own greedy decoding (:meth:`greedy_targets`), so the
        result is the log-probability of that path, with gradients.
        """
        lengths = self._check(inputs, lengths)
        B, n = inputs.shape[:2]
        if targets is None:
            targets = self.greedy_targets(inputs, lengths)
        if not isinstance(targets, Tensor) or targets.ndim != 2 or targets.shape[0] != B or targets.is_floating_point():
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"PointerNetwork: targets must be an integer tensor (B={B}, m), got {got}")
        top = n + int(self.end_token)
        bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= top))
        if bad.any():
            raise ValueError(f"PointerNetwork: targets must be in [0, {top}) or IGNORE_INDEX, got {targets[bad][:5]}")
        enc, state = self.encode(inputs, lengths)
        m = targets.shape[1]
        is_input = (targets >= 0) & (targets < n)  # (B, m): steps that output a real input
        safe = torch.where(is_input, targets, torch.zeros_like(targets))
        chosen = self.embed(inputs.gather(1, safe[..., None].expand(B, m, self.input_dim)))  # (B, m, H)
        dec_in = torch.cat([self.start.expand(B, 1, -1), chosen[:, :-1]], dim=1)  # (B, m, H): x_{C_{i-1}}
        dec, _ = self.decoder(dec_in, state)  # (B, m, H)
        logits = self.pointer.logits(dec, self.keys(enc))  # (B, m, n + end_token)
        onehot = F.one_hot(safe, n) * is_input[..., None]  # (B, m, n)
        visited = (onehot.cumsum(dim=1) - onehot) > 0  # (B, m, n): output at an earlier step
        valid = torch.arange(n, device=inputs.device) < lengths[:, None, None]  # (B, 1, n)
        num_out = torch.arange(m, device=inputs.device).expand(B, m)  # (B, m)
        return masked_log_softmax(logits, self.step_mask(visited, valid, num_out))

    loss = staticmethod(pointer_loss)

    def greedy_targets(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The greedy decoding as a target row: indices, then the end symbol ``n`` (if any), then ``IGNORE_INDEX``."""
        indices = self.decode(inputs, lengths)  # (B, steps), -1 from the end on
        targets = torch.where(indices >= 0, indices, torch.full_like(indices, IGNORE_INDEX))
        if self.end_token:
            first_end = (indices < 0).long().argmax(dim=1)  # (B,): decoding always ends with the end symbol
            targets[torch.arange(len(targets)), first_end] = inputs.shape[1]
        return targets

    @torch.no_grad()
    def decode(
        self, inputs: Tensor, lengths: Tensor | None = None, *, return_log_probs: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Greedy decoding: at each step output the most probable allowed input (or the end symbol).

        Returns ``indices (B, n + end_token)`` long (``-1`` from the end on), and with ``return_log_probs`` also
        the per-step log-probabilities ``(B, n + end_token, n + end_token)`` (all ``-inf`` once a row has finished).
        """
        lengths = self._check(inputs, lengths)
        B, n = inputs.shape[:2]
        enc, state = self.encode(inputs, lengths)
        keys = self.keys(enc)  # (B, n + end_token, H)
        steps = n + int(self.end_token)
        valid = torch.arange(n, device=inputs.device) < lengths[:, None]  # (B, n)
        visited = torch.zeros(B, n, dtype=torch.bool, device=inputs.device)
        done = torch.zeros(B, dtype=torch.bool, device=inputs.device)
        indices = torch.full((B, steps), -1, dtype=torch.long, device=inputs.device)
        all_log_probs = []
        x = self.start.expand(B, 1, -1)  # (B, 1, H)
        for i in range(steps):
            dec, state = self.decoder(x, state)  # (B, 1, H)
            mask = self.step_mask(visited, valid, visited.sum(dim=-1))  # (B, n + end_token)
            log_probs = masked_log_softmax(self.pointer.logits(dec[:, 0], keys), mask)  # (B, n + end_token)
            log_probs = log_probs.masked_fill(done[:, None], float("-inf"))  # a finished row chooses nothing
            all_log_probs.append(log_probs)
            choice = log_probs.argmax(dim=-1)  # (B,)
            done = done | ~mask.any(dim=-1) | (choice >= n)
            indices[:, i] = torch.where(done, torch.full_like(choice, -1), choice)
            picked = torch.where(done, torch.zeros_like(choice), choice)
            visited = visited | (F.one_hot(picked, n).bool() & ~done[:, None])
            x = self.embed(inputs.gather(1, picked[:, None, None].expand(B, 1, self.input_dim)))  # (B, 1, H)
            if bool(done.all()):
                for _ in range(i + 1, steps):
                    all_log_probs.append(torch.full_like(log_probs, float("-inf")))
                break
        if return_log_probs:
            return indices, torch.stack(all_log_probs, dim=1)  # (B, steps, n + end_token)
        return indices
