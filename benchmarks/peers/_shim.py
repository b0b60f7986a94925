"""Make ``import torchvision`` work next to a CPU-only torch in the peers' venv.

The same work-around as ``convir._compat.ensure_torchvision`` (copied, because this runs in the
peers' own virtualenv without convir): PyPI's torchvision 0.28 wheel is a CUDA build whose
C extension cannot load beside torch's CPU wheel, and its import then fails on two fake-kernel
registrations. Declaring the two op schemas lets the pure-Python transforms import."""

from __future__ import annotations

import contextlib
import sys

_lib = None


def ensure_torchvision() -> None:
    global _lib
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in (
            "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        ):
            with contextlib.suppress(RuntimeError):
                _lib.define(schema)
        import torchvision  # noqa: F401
