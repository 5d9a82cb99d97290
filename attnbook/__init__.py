"""attnbook: the package of the open textbook *Attention, Derived*.

Every chapter of the book derives one attention mechanism, checks it against an independent reference,
and promotes the finished code here. The layout reads like the book's table of contents:

* :mod:`attnbook.attention` -- attention itself. :func:`~attnbook.attention.scaled_dot_product_attention`
  is the functional core (ch. 03); :mod:`~attnbook.attention.masks` builds masks (``True`` = may attend,
  floats are additive, any other dtype is an error; at least ``(T_q, T_k)``, broadcast to
  ``(B, H, T_q, T_k)``); one module per mechanism family (``additive``, ``positional``, ``local``, ...).
* :mod:`attnbook.models` -- whole models built from those parts (Pointer Network, Transformer, GPT, ...).
* :mod:`attnbook.data` -- the seeded synthetic tasks and offline corpora the experiments use, and
  downloaders (pinned checksums, atomic cache writes) for the larger datasets of full runs.
* :mod:`attnbook.viz` -- attention heatmaps and layer x head grids.
* :mod:`attnbook.train` -- the Lightning engine behind the ``attnbook`` command (``attnbook fit --config
  gpt-quick``): modules, data modules, YAML presets, atomic checkpoints; chapters train through it too.
* :mod:`attnbook.config` -- quick/full run sizes (``ATTNBOOK_FULL=1``) and seeding.

**One attention core with pluggable parts.** A mechanism is not a new copy of multi-head attention. The
class :class:`~attnbook.attention.AttentionCore` runs one pipeline on heads already split
(``q (B, H, T_q, D)``, ``k (B, H, T_k, D)``, ``v (B, H, T_k, D_v)``)::

    q, k     = positions.rotate(q, k)           # e.g. RoPE rotates queries and keys
    logits   = scores(q, k)                     # dot product / additive / ...
             + positions.bias(q, k)             # e.g. Shaw relative logits, ALiBi slopes
    logits  += mask & pattern                   # padding, causal, windows: which keys a query sees
    weights  = normalizer(logits)               # softmax, or a variant
    out      = dropout(weights) @ v             # training only: zero w.p. p, scale by 1/(1-p)

Each stage is a small ``nn.Module`` with one method: :class:`~attnbook.attention.Scores`,
:class:`~attnbook.attention.PositionPart`, :class:`~attnbook.attention.Pattern`,
:class:`~attnbook.attention.Normalizer`. To add a mechanism, subclass the part that is new and hand it to
the core: ``AttentionCore(positions=ALiBi(num_heads))`` or
``MultiHeadAttention(E, H, core=AttentionCore(pattern=SlidingWindow(64)))``. With the standard parts
(dot-product scores, softmax) the core calls PyTorch's fused kernel, folding biases and patterns into
its mask; otherwise it runs the readable manual pipeline. Both paths give zeros, not NaN, for a query
that sees no key, and validate their inputs with errors that name the argument and the shapes seen.
Second derivatives (double backward) need ``backend="manual"``: PyTorch's fused CPU kernel has none.
"""

from attnbook.config import is_full, seed_everything, size

__version__ = "0.1.0"

__all__ = ["__version__", "is_full", "seed_everything", "size"]
