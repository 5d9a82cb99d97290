"""Data for the book's experiments, all available offline.

* :mod:`~attnbook.data.regression` -- the 1-D kernel-regression task (ch. 01)
* :mod:`~attnbook.data.pointer` -- sorting and planar convex hulls (ch. 02)
* :mod:`~attnbook.data.seq2seq` -- symbols-to-frames with a stop token; sentence-pair scoring (ch. 04)
* :mod:`~attnbook.data.positions` -- the length-extrapolation task (ch. 05)
* :mod:`~attnbook.data.text` -- the Python standard library as a text corpus, a character tokenizer, and the
  Tiny Shakespeare downloader (pinned SHA-256, atomic cache writes) for full runs (ch. 06)
"""

from attnbook.data import pointer, positions, regression, seq2seq, text
from attnbook.data.pointer import *  # noqa: F403
from attnbook.data.positions import *  # noqa: F403
from attnbook.data.regression import *  # noqa: F403
from attnbook.data.seq2seq import *  # noqa: F403
from attnbook.data.text import *  # noqa: F403

__all__ = [*regression.__all__, *pointer.__all__, *seq2seq.__all__, *positions.__all__, *text.__all__]
