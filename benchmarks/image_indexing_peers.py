"""Image indexing side by side: convir, rclip, clip-retrieval and a bare forward pass (issue 18).

Every system indexes the same N flickr8k-1k photos (copied into a fresh folder) with the same
architecture, open_clip ViT-B-32 with random weights (seed 0; speed does not depend on the
weights), and the whole command is timed, start-up included, in interleaved repetitions
(system order rotates each run). Peak memory is the peak of the summed RSS of the command's
process tree (clip-retrieval forks DataLoader workers), sampled every 50 ms.

- convir: ``convir index PHOTOS --encoder open_clip:ViT-B-32 --out IX`` (torch; convir-seq: with
  ``--decode-workers 0``), and the same
  with ``--runtime onnx`` and ``--runtime onnx-int8`` (the export and its int8 copy are made
  once, before the runs, as rclip's model is downloaded once); ``--before SRC`` adds the same
  command run from another source tree (e.g. /work/main/src, the code before this change).
- rclip: its own CLI through benchmarks/peers/rclip_random.py (its model files swapped for the
  random ViT-B-32 ONNX export at 224 px; query = an image path, so only the image tower runs).
- clip-retrieval: ``clip-retrieval inference`` through benchmarks/peers/clip_retrieval_random.py
  (``--clip_model`` = a random ViT-B-32 state dict), with its defaults (batch 256, 8 DataLoader
  workers) and with ``--batch_size 32 --num_prepro_workers 2``.
- bare: a batched ``model.encode_image`` on random pixels, no I/O, at the best batch size and
  torch thread count found by a short grid search first: the physical limit of this machine.

The peers run from their own virtualenv (``--peers-python``); see docs/benchmarks.md,
"Performance (issue 18)", for how it was made. Time the script under
``flock /tmp/convir-bench.lock`` so no other timing run overlaps it.

Usage: python benchmarks/image_indexing_peers.py [--limit 200] [--runs 3]
       [--peers-python /work/peers-venv/bin/python] [--systems convir,convir-onnx,rclip,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import REPO, SHARED, machine

HERE = Path(__file__).resolve().parent
ARCH = "ViT-B-32"
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"  # where rclip looks for its model files
SYSTEMS = (
    "bare",
    "convir",
    "convir-onnx",
    "convir-onnx-int8",
    "convir-seq",
    "rclip",
    "clip-retrieval",
    "clip-retrieval-b32",
)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- preparation (once) --------------------------------------------------------------------------
def copy_photos(limit: int, dest: Path) -> list[Path]:
    src = sorted((SHARED / "flickr8k-1k" / "images").iterdir())[:limit]
    dest.mkdir(parents=True, exist_ok=True)
    for p in src:
        shutil.copy2(p, dest / p.name)
    return [dest / p.name for p in src]


def prepare_models(work: Path) -> dict[str, Path]:
    """The random ViT-B-32 as each system loads it: convir's ONNX export (also rclip's, its
    input renamed), and an OpenAI-layout state dict for clip-retrieval's ``clip.load``."""
    sys.path.insert(0, str(REPO / "src"))
    os.environ["CONVIR_CACHE"] = str(work / "cache")
    import onnx
    import torch

    from convir._compat import ensure_torchvision
    from convir.encoders.onnx_image import OnnxImageEncoder, export_dir

    ensure_torchvision()
    import open_clip

    OnnxImageEncoder(f"open_clip:{ARCH}", int8=True)  # exports (and quantises) into work/cache once
    visual = export_dir(f"open_clip:{ARCH}") / "visual.onnx"
    rclip = work / "rclip-models" / RCLIP_SUBDIR
    rclip.mkdir(parents=True, exist_ok=True)
    if not (rclip / "visual.onnx").is_file():  # kept from an earlier run in the same --work
        model = onnx.load(str(visual))
        old = model.graph.input[0].name
        model.graph.input[0].name = "input"  # rclip feeds {"input": batch}
        for node in model.graph.node:
            node.input[:] = ["input" if x == old else x for x in node.input]
        onnx.save(model, str(rclip / "visual.onnx"))
    (rclip / "textual.onnx").write_bytes(b"")  # placeholder: an image query never loads it
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (work / "rclip-models" / "tokenizer").mkdir(exist_ok=True)
    shutil.copy2(vocab, work / "rclip-models" / "tokenizer" / vocab.name)
    ckpt = work / "vit_b_32_random_openai.pt"
    if not ckpt.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # convir's seed: the same random weights
            oc = open_clip.create_model(ARCH, pretrained_text=False)
        torch.save({k: v for k, v in oc.state_dict().items() if k != "logit_bias"}, ckpt)
    return {"rclip_models": work / "rclip-models", "ckpt": ckpt}


# -- measuring one command -------------------------------------------------------------------------
def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, int, str]:
    """(wall seconds, peak PSS summed over the process tree in GB, peak RSS of its largest
    process in GB, most processes, stdout). PSS splits pages shared between processes (forked
    DataLoader workers share the parent's), so the sum is the physical memory the command holds."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, top, procs = 0, 0, 1
    root = psutil.Process(proc.pid)
    out: dict[str, str] = {}

    def drain() -> None:
        out["stdout"], out["stderr"] = proc.communicate()

    reader = threading.Thread(target=drain)
    reader.start()
    while reader.is_alive():
        try:
            tree = [root, *root.children(recursive=True)]
            pss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    info = p.memory_full_info()
                    pss += info.pss
                    top = max(top, info.rss)
            peak, procs = max(peak, pss), max(procs, len(tree))
        except psutil.Error:
            pass
        reader.join(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {out.get('stderr', '')[-2000:]}")
    return wall, peak / 1e9, top / 1e9, procs, out.get("stdout", "")


def commands(
    system: str,
    photos: Path,
    models: dict[str, Path],
    work: Path,
    peers_py: str,
    run: int,
    before: str | None,
) -> tuple[list[str], Path, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CONVIR_CACHE": str(work / "cache")}
    out = work / "out" / f"{system}-{run}"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if system in ("convir", "convir-onnx", "convir-onnx-int8", "convir-seq", "convir-before"):
        cmd = [
            py,
            "-m",
            "convir.cli",
            "index",
            str(photos),
            "--encoder",
            f"open_clip:{ARCH}",
            "--out",
            str(out),
        ]
        cmd.append("--json")
        if system in ("convir-onnx", "convir-onnx-int8"):
            cmd += ["--runtime", system.removeprefix("convir-")]
        if system == "convir-seq":  # the same, decoding in the model's thread
            cmd += ["--decode-workers", "0"]
        if system == "convir-before":
            env["PYTHONPATH"] = str(before)
        return cmd, work, env
    peers_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if system == "rclip":
        data = out / "rclip-data"  # a fresh rclip database each run; the model files linked in
        (data / RCLIP_SUBDIR).mkdir(parents=True)
        (data / "tokenizer").symlink_to(models["rclip_models"] / "tokenizer")
        for name in ("visual.onnx", "textual.onnx"):
            (data / RCLIP_SUBDIR / name).symlink_to(models["rclip_models"] / RCLIP_SUBDIR / name)
        query = work / "query.jpg"
        cmd = [peers_py, str(HERE / "peers" / "rclip_random.py"), "--", str(query), "--top", "1"]
        return cmd, photos, {**peers_env, "RCLIP_DATADIR": str(data)}
    if system.startswith("clip-retrieval"):
        cmd = [peers_py, str(HERE / "peers" / "clip_retrieval_random.py"), "inference"]
        cmd += ["--input_dataset", str(photos), "--output_folder", str(out)]
        cmd += ["--clip_model", str(models["ckpt"]), "--use_jit", "False"]
        if system == "clip-retrieval-b32":
            cmd += ["--batch_size", "32", "--num_prepro_workers", "2"]
        return cmd, work, peers_env
    if system == "bare":
        best = json.loads((work / "bare-best.json").read_text())
        cmd = [py, str(Path(__file__).resolve()), "--bare-worker", str(best["batch"]), str(best["threads"])]
        cmd += ["--limit", str(len(list(photos.iterdir())))]
        return cmd, work, env
    raise ValueError(system)


# -- the bare forward pass -------------------------------------------------------------------------
def _model():
    import torch

    sys.path.insert(0, str(REPO / "src"))
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    torch.manual_seed(0)
    return torch, open_clip.create_model(ARCH, pretrained_text=False).eval()


def bare_rate(torch, model, batch: int, threads: int, n: int) -> float:
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        model.encode_image(x)  # warm-up
        calls = max(1, -(-n // batch))
        t = time.perf_counter()
        for _ in range(calls):
            model.encode_image(x)
        return calls * batch / (time.perf_counter() - t)


def bare_worker(batch: int, threads: int, n: int) -> None:
    torch, model = _model()
    print(
        json.dumps({"rate": bare_rate(torch, model, batch, threads, n), "batch": batch, "threads": threads})
    )


def bare_grid(work: Path, n: int) -> dict[str, object]:
    """Best (batch, threads) for the bare forward, on ``n`` images per setting."""
    torch, model = _model()
    cores = os.cpu_count() or 1
    grid = []
    for threads in sorted({1, max(1, cores // 2), cores}):
        for batch in (8, 16, 32, 64):
            grid.append(
                {"batch": batch, "threads": threads, "rate": bare_rate(torch, model, batch, threads, n)}
            )
            print(
                f"  bare grid: batch {batch:>2}, {threads} threads: {grid[-1]['rate']:.1f} images/s",
                flush=True,
            )
    best = max(grid, key=lambda g: g["rate"])
    (work / "bare-best.json").write_text(json.dumps({**best, "grid": grid}))
    return best


# -- main ----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=200, help="photos (the first N of flickr8k-1k, sorted)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved repetitions")
    ap.add_argument(
        "--peers-python", default="/work/peers-venv/bin/python", help="venv with rclip, clip-retrieval"
    )
    ap.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    ap.add_argument("--before", default=None, help="also run convir from this src folder (convir-before)")
    ap.add_argument(
        "--grid-images",
        type=int,
        default=96,
        help="images per setting of the bare grid search (0: reuse --work's last grid)",
    )
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--bare-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker[0], args.bare_worker[1], args.limit)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.before:
        systems.append("convir-before")
    unknown = [s for s in systems if s not in (*SYSTEMS, "convir-before")]
    if unknown:
        ap.error(f"unknown systems: {unknown}")
    work = args.work or Path(tempfile.mkdtemp(prefix="convir-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{machine()}; load average {load_average()}; {args.limit} photos, {args.runs} runs; work {work}",
        flush=True,
    )
    photos = work / f"photos-{args.limit}"
    if not photos.exists():
        copy_photos(args.limit, photos)
    shutil.copy2(sorted(photos.iterdir())[0], work / "query.jpg")
    models = prepare_models(work)
    if "bare" in systems and args.grid_images == 0 and (work / "bare-best.json").is_file():
        best = json.loads((work / "bare-best.json").read_text())  # --grid-images 0: reuse the last grid
        print(
            f"bare forward: batch {best['batch']}, {best['threads']} threads (from {work / 'bare-best.json'})"
        )
    elif "bare" in systems:
        best = bare_grid(work, max(1, args.grid_images))
        print(f"bare forward: best batch {best['batch']}, {best['threads']} threads")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    for run in range(args.runs):
        order = systems[run % len(systems) :] + systems[: run % len(systems)]
        for system in order:
            cmd, cwd, env = commands(system, photos, models, work, args.peers_python, run, args.before)
            load = os.getloadavg()[0]
            wall, peak, top, procs, stdout = run_measured(cmd, cwd, env)
            rate = args.limit / wall
            if system == "bare":
                rate = json.loads(stdout.strip().splitlines()[-1])["rate"]
            loop = ""
            if system.startswith("convir"):  # the report says how long the encoding loop itself took
                rep = json.loads(stdout)
                loop = f"  (encoding loop {rep['total'] / rep['encode_seconds']:.2f} images/s)"
            results[system].append(
                {"rate": rate, "wall": wall, "peak_gb": peak, "top_rss_gb": top, "procs": procs, "load": load}
            )
            print(
                f"run {run} {system:<19} {rate:6.2f} images/s  wall {wall:6.1f} s  PSS {peak:.2f} GB  "
                f"largest RSS {top:.2f} GB ({procs} proc)  load {load:.2f}{loop}",
                flush=True,
            )
    med = {s: statistics.median(r["rate"] for r in rs) for s, rs in results.items() if rs}
    mem = {s: statistics.median(r["peak_gb"] for r in rs) for s, rs in results.items() if rs}
    top = {s: statistics.median(r["top_rss_gb"] for r in rs) for s, rs in results.items() if rs}
    print(f"\nmedian of {args.runs} interleaved runs, {args.limit} photos; load average now {load_average()}")
    head = "| system | images/s | peak PSS, all procs (GB) | largest RSS (GB) | procs | x rclip | / bare |"
    print(head + "\n|---|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        if s not in med:
            continue
        to_rclip = f"{med[s] / med['rclip']:.2f}" if "rclip" in med else "-"
        to_bare = f"{med[s] / med['bare']:.0%}" if "bare" in med else "-"
        procs = max(r["procs"] for r in results[s])
        print(f"| {s} | {med[s]:.2f} | {mem[s]:.2f} | {top[s]:.2f} | {procs} | {to_rclip} | {to_bare} |")
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"limit": args.limit, "runs": results, "median": med, "peak": mem})
        )


if __name__ == "__main__":
    main()
