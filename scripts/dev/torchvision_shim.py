"""Let PyPI's torchvision import beside the CPU torch wheel, in the development venv only (installed by setup.sh).

timm, a test-only reference of the parity tests, pulls torchvision from PyPI, which is a CUDA build: beside the
CPU torch wheel its compiled ops do not load and its fake-op registrations fail with "operator torchvision::nms
does not exist", which also breaks Lightning, transformers and timm, which import it. setup.sh puts this module
and a one-line .pth file that imports it into .venv; the hook waits for the first ``import torchvision`` and
then defines the two op schemas that torchvision registers fakes for (no compiled torchvision op is ever used).
It does nothing with a CUDA torch, or a CPU build of torchvision, where torchvision's own ops load.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import sys

_LIBRARY = None  # the torch.library.Library that holds the schemas; kept alive here


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - the importlib protocol
        if name == "torchvision":
            sys.meta_path.remove(self)
            _define_schemas()
        return None  # the normal finders import the module


def _define_schemas() -> None:
    global _LIBRARY
    import torch

    if torch.version.cuda is not None or importlib.metadata.version("torchvision").endswith("+cpu"):
        return
    try:
        _LIBRARY = torch.library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already defined
        pass


sys.meta_path.insert(0, _BeforeTorchvision())
