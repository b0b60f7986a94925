"""``convir index`` with and without ``--captioner`` on flickr8k photos (issue 29 part 3).

Random weights (no pretrained captioner here): the speed of a model does not depend on its
weights, only on its architecture and on how long the captions it generates are, so
``--size base`` (BLIP-base: the default ``BlipConfig``, a ViT-B/16 at 384 px and a BERT-base
decoder, what ``Salesforce/blip-image-captioning-base`` is) gives a realistic figure for that
architecture; ``--size tiny`` (the two-layer test model) measures convir's own overhead.
Captions are generated greedily up to 30 new tokens (random weights rarely stop earlier, so
this is the worst case). Each setting indexes into a fresh folder; the encoder is the same.

    python benchmarks/captioner_speed.py --n 200 --size tiny
    python benchmarks/captioner_speed.py --n 20 --size base
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, SHARED, machine

sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="photos from flickr8k-1k")
    ap.add_argument("--size", choices=("tiny", "base"), default="tiny", help="captioner architecture")
    ap.add_argument("--encoder", default="open_clip:ViT-B-32", help="random ViT-B-32 by default")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from transformers import BlipConfig

    from captioner_helpers import build_blip_captioner  # tests/: tiny models built from configs
    from convir.gallery.ingest import ingest

    work = Path(tempfile.mkdtemp(prefix="captioner-speed-"))
    try:
        photos = work / "photos"
        photos.mkdir()
        for src in sorted((SHARED / "flickr8k-1k" / "images").iterdir())[: args.n]:
            shutil.copy(src, photos / src.name)  # no sidecar captions: a photo library
        config = BlipConfig() if args.size == "base" else None
        blip = build_blip_captioner(work / "blip", config=config)
        load = os.getloadavg()[0]
        print(f"{machine()}; load average {load:.2f} (shared machine: figures measured under load)")
        print(
            f"{args.n} photos, encoder {args.encoder} (random weights), captioner BLIP-{args.size} (random)"
        )
        rows = []
        for name, captioner in (("index alone", None), (f"index + BLIP-{args.size}", f"hf:{blip}")):
            t0 = time.perf_counter()
            report = ingest(photos, work / name.replace(" ", "_"), args.encoder, batch_size=args.batch_size,
                            captioner=captioner)  # fmt: skip
            wall = time.perf_counter() - t0
            rows.append((name, wall, report.encode_seconds, report.caption_seconds, report.captioned))
        for name, wall, enc, cap, n_cap in rows:
            print(
                f"{name:22s} {wall:7.1f} s total ({args.n / wall:6.1f} photos/s); encoding {enc:6.1f} s, "
                f"captioning {cap:6.1f} s" + (f" ({n_cap / cap:.2f} photos/s)" if cap else "")
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
