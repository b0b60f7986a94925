"""clip-retrieval's own CLI (``clip-retrieval inference ...``) with random-weight ViT-B-32.

Run with the peers' venv python. The only swap is the weights: ``--clip_model`` is given a
local checkpoint file (a state dict of open_clip's randomly initialised ViT-B-32, seed 0, in
the OpenAI layout that open_clip uses for this architecture) instead of the name "ViT-B/32",
which clip-retrieval 2.22 passes to ``clip.load`` (the openai CLIP package, clip-anytorch),
which builds its own ViT-B/32 from it with ``clip.model.build_model``: a documented option of
``clip.load``, so no code is patched; ``--use_jit False`` because the file is not TorchScript.
Before that, torchvision is made importable (benchmarks/peers/_shim.py), as convir does.

Usage: python clip_retrieval_random.py inference --input_dataset DIR --output_folder OUT
       --clip_model RANDOM.pt --use_jit False [--batch_size 32 --num_prepro_workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shim import ensure_torchvision

ensure_torchvision()

from clip_retrieval.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
