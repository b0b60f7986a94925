"""rclip's own CLI with random-weight open_clip ViT-B-32 instead of its downloaded model.

Run with the peers' venv python, in the photo folder, with ``RCLIP_DATADIR`` pointing at a
folder that holds ``ViT-B-32-256-datacomp_s34b_b86k/visual.onnx`` (benchmarks/
image_indexing_peers.py puts convir's ONNX export of the random ViT-B-32 image tower there,
input renamed to rclip's ``input``). What is swapped, and nothing else:
- the model files rclip would download from the hub (visual.onnx; textual.onnx is an empty
  placeholder, never loaded because the query is an image path; the tokenizer vocabulary is
  open_clip's/CLIP's own file);
- ``rclip.utils.preprocess.IMAGE_SIZE`` 256 -> 224 (``--size 224``, the default), because
  ViT-B-32 takes 224 px where rclip ships ViT-B-32-256; ``--size 256`` keeps rclip's size and
  needs a 256 px export.
Everything else (directory walk, thread pool of image loaders, batches of 8, ONNX Runtime
session options, SQLite writes) is rclip's own code, run through ``rclip.main.main()``.

Usage: python rclip_random.py [--size 224] -- RCLIP_ARGS...
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    size = 224
    if argv[:1] == ["--size"]:
        size, argv = int(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    import rclip.utils.preprocess as pre

    pre.IMAGE_SIZE = size
    from rclip import main as rclip_main

    sys.argv = ["rclip", *argv]
    rclip_main.main()


if __name__ == "__main__":
    main()
