"""Work-arounds for broken third-party installs, applied before heavy imports.

PyPI's Linux torchvision wheels are CUDA builds. Next to a CPU-only torch (the only torch
available on some machines, ours included) their C extension cannot load, and torchvision
0.28 then fails at import because two fake-kernel registrations (``nms``/``qnms``) are not
guarded by ``_has_ops()``. transformers and open_clip import torchvision when it is
installed, so one broken wheel would take every encoder down. We only need torchvision's
pure-Python transforms, so when (and only when) that exact failure happens we declare the
two op schemas without kernels and import again. Calling those ops still fails loudly.
"""

from __future__ import annotations

import contextlib
import sys

_done = False
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_lib = None  # keep the Library object alive: dropping it unregisters the schemas


def ensure_torchvision() -> None:
    """Make ``import torchvision`` work (if it is installed at all); idempotent."""
    global _done, _lib
    if _done:
        return
    _done = True
    try:
        import torchvision
    except ImportError:
        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            with contextlib.suppress(RuntimeError):  # already defined by a partial load
                _lib.define(schema)
        import torchvision  # noqa: F401
