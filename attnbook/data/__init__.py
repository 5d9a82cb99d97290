"""Data for the book's experiments, all available offline.

* :mod:`~attnbook.data.regression` -- the 1-D kernel-regression task (ch. 01)
* :mod:`~attnbook.data.pointer` -- sorting and planar convex hulls (ch. 02)
* :mod:`~attnbook.data.seq2seq` -- symbols-to-frames with a stop token; sentence-pair scoring (ch. 04)
* :mod:`~attnbook.data.positions` -- the length-extrapolation task (ch. 05)
* :mod:`~attnbook.data.text` -- the Python standard library as a text corpus, a character tokenizer, and the
  Tiny Shakespeare downloader for full runs (ch. 06)
* :mod:`~attnbook.data.recall` -- associative recall, a long-range content-matching task (ch. 10)
* :mod:`~attnbook.data.images` -- scikit-learn's handwritten digits (offline) and the CIFAR-10 downloader (ch. 13)
* :mod:`~attnbook.data.shapes` -- generated images of squares, discs and points with their boxes (ch. 16)
* :mod:`~attnbook.data.conditional_shapes` -- coloured shapes described by condition tokens, for the conditional
  denoiser (ch. 18)
* :mod:`~attnbook.data.speech` -- generated speech (symbols as short bursts in noise) and visual search scenes
  with scanpaths (ch. 19)
* :mod:`~attnbook.data.series` -- series with shape and value cues; a market of correlated stocks (ch. 20)
* :mod:`~attnbook.data.sessions` -- sessions for next-item prediction; characters with entity relations (ch. 21)
* :mod:`~attnbook.data.video` -- moving-square videos with injected anomalies, steering scenes, two-task scenes (ch. 22)
* :mod:`~attnbook.data.next_token` -- Scan and Snap's synthetic next-token facts: common and distinct context
  tokens (ch. 23)
* :mod:`~attnbook.data.circuits` -- induction, comparison and memorised-fact prompts with their corruptions (ch. 26)
* :mod:`~attnbook.data.registry` -- the registry of every dataset the book uses (source, licence, size, SHA-256,
  chapters; ``data/registry.yaml``, shipped with the package), the cache folder (:func:`get_cache_dir`) and the
  downloader (pinned size and SHA-256, atomic writes, a clear error offline)
"""

from attnbook.data import (
    circuits,
    conditional_shapes,
    images,
    next_token,
    pointer,
    positions,
    recall,
    registry,
    regression,
    seq2seq,
    series,
    sessions,
    shapes,
    speech,
    text,
    video,
)
from attnbook.data.circuits import *  # noqa: F403
from attnbook.data.conditional_shapes import *  # noqa: F403
from attnbook.data.images import *  # noqa: F403
from attnbook.data.next_token import *  # noqa: F403
from attnbook.data.pointer import *  # noqa: F403
from attnbook.data.positions import *  # noqa: F403
from attnbook.data.recall import *  # noqa: F403
from attnbook.data.registry import *  # noqa: F403
from attnbook.data.regression import *  # noqa: F403
from attnbook.data.seq2seq import *  # noqa: F403
from attnbook.data.series import *  # noqa: F403
from attnbook.data.sessions import *  # noqa: F403
from attnbook.data.shapes import *  # noqa: F403
from attnbook.data.speech import *  # noqa: F403
from attnbook.data.text import *  # noqa: F403
from attnbook.data.video import *  # noqa: F403

__all__ = list(
    dict.fromkeys(
        [
            *regression.__all__,
            *pointer.__all__,
            *seq2seq.__all__,
            *positions.__all__,
            *text.__all__,
            *recall.__all__,
            *images.__all__,
            *shapes.__all__,
            *conditional_shapes.__all__,
            *speech.__all__,
            *series.__all__,
            *sessions.__all__,
            *video.__all__,
            *next_token.__all__,
            *circuits.__all__,
            *registry.__all__,
        ]
    )
)
