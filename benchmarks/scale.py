"""Vector search at scale (issue 19): 10k to 5M synthetic-but-realistic vectors, faiss and Milvus Lite.

Data (exactly): the MiniLM (caption:minilm) vectors of every caption of coco5k and
flickr8k-1k (30,011 captions). 1,000 of them, drawn with seed 0, are the queries; the other
29,011 are the *bases*. Gallery vector j (dimension 384) is
``normalise(b[u_j] + sigma * g_j / sqrt(d))`` with ``u_j`` a uniformly drawn base, ``g_j`` a
standard normal vector and sigma = 0.5 (cos(x, its base) ~ 0.89; an item's nearest
neighbours are mostly other noisy copies of nearby captions). For dimension 512 the bases and
queries are first lifted by a fixed random 512 x 384 matrix with orthonormal columns (inner
products unchanged), then the 512-d noise is added, so the vectors are full-rank in 512-d.
Rows are generated in blocks with a seed per block, so the first N rows of the 5M file are the
N-row gallery: every size is a prefix of the same sequence. Queries are the held-out caption
vectors themselves (no noise). Ground truth: exact top-10 by inner product (faiss flat).

Each case runs in its own process (fresh memory) and appends one JSON line to --results:
build seconds, anonymous RSS after the build (the index's memory; the input vectors are a
memory map), peak RSS, index size on disk, recall@10 over 1,000 queries (for HNSW at several
efSearch) and p50/p95 latency of 200 single queries. ``uptime`` is recorded with each.

Usage:
  python benchmarks/scale.py data --dim 384 --n 5000000          # vectors + ground truths
  python benchmarks/scale.py case faiss-hnsw --dim 384 --n 1000000
  python benchmarks/scale.py query milvus-server-ivfpq --n 1000000  # the live collection of a running case
  python benchmarks/scale.py ingest --workers 1 2                 # Ray 1 vs 2 workers
  python benchmarks/scale.py flops                                 # CLIP image tower FLOPs
  python benchmarks/scale.py plot                                  # docs/img/scale_latency.png
Cases: faiss-flat, faiss-hnsw, faiss-ivfpq, milvus-hnsw, milvus-ivfsq8, milvus-flat (Milvus Lite,
which searches exhaustively whatever the index type), and milvus-server-hnsw / -ivfpq / -flat
against a Milvus server at --milvus-uri (here the `milvus` PyPI package's embedded standalone
server: `pip install milvus==2.3.5; milvus-server --data DIR`, with MILVUS_DATA=DIR for its size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO, SHARED, machine, pct

SIGMA = 0.5
BLOCK = 250_000
N_QUERIES = 1000
N_LATENCY = 200
SIZES = (10_000, 100_000, 1_000_000, 5_000_000)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def mem() -> dict[str, float]:
    """Current anonymous RSS and peak RSS of this process, in MiB."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("RssAnon", "VmHWM", "VmRSS"):
            out[key] = int(val.split()[0]) / 1024
    return out


def caption_vectors(cache: Path) -> np.ndarray:
    if cache.exists():
        return np.load(cache)
    from convir.datasets import load_coco5k, load_flickr8k
    from convir.encoders import load_encoder

    caps = [c for it in load_coco5k(SHARED / "coco5k") for c in it.captions]
    caps += [c for it in load_flickr8k(SHARED / "flickr8k-1k") for c in it.captions]
    x = load_encoder("caption:minilm").encode_text(caps, batch_size=256).astype(np.float32)
    np.save(cache, x)
    return x


def bases_and_queries(work: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    x = caption_vectors(work / "captions_minilm.npy")
    rng = np.random.default_rng(0)
    q_idx = rng.choice(len(x), size=N_QUERIES, replace=False)
    mask = np.ones(len(x), bool)
    mask[q_idx] = False
    bases, queries = x[mask], x[q_idx]
    if dim != x.shape[1]:
        lift, _ = np.linalg.qr(np.random.default_rng(512).standard_normal((dim, x.shape[1])))
        bases, queries = bases @ lift.T, queries @ lift.T
    norm = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return norm(bases), norm(queries)


def data_path(work: Path, dim: int) -> Path:
    return work / f"gallery_{dim}.f32"


def open_gallery(work: Path, dim: int, n: int) -> np.ndarray:
    path = data_path(work, dim)
    total = path.stat().st_size // (4 * dim)
    if total < n:
        raise SystemExit(f"{path} holds {total} rows, need {n}: run `data --n {n}` first")
    return np.memmap(path, dtype=np.float32, mode="r", shape=(total, dim))[:n]


def make_data(work: Path, dim: int, n: int) -> None:
    bases, queries = bases_and_queries(work, dim)
    np.save(work / f"queries_{dim}.npy", queries)
    path = data_path(work, dim)
    have = path.stat().st_size // (4 * dim) if path.exists() else 0
    if have < n:
        t = time.perf_counter()
        mm = np.memmap(path, dtype=np.float32, mode="r+" if have else "w+", shape=(n, dim))
        for start in range(have - have % BLOCK, n, BLOCK):
            rows = min(BLOCK, n - start)
            rng = np.random.default_rng([dim, start])
            x = bases[rng.integers(0, len(bases), rows)]
            x += (SIGMA / math.sqrt(dim)) * rng.standard_normal((rows, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            mm[start : start + rows] = x
        mm.flush()
        del mm
        print(f"generated {n} x {dim} in {time.perf_counter() - t:.0f} s")
    for size in SIZES:
        if size <= n:
            truth(work, dim, size)


def truth(work: Path, dim: int, n: int) -> np.ndarray:
    """Exact top-10 ids of the queries over the first n rows (faiss flat, in blocks)."""
    import faiss

    path = work / f"truth_{dim}_{n}.npy"
    if path.exists():
        return np.load(path)
    x, q = open_gallery(work, dim, n), np.load(work / f"queries_{dim}.npy")
    t = time.perf_counter()
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_i = np.full((len(q), 10), -1, np.int64)
    for start in range(0, n, BLOCK):
        block = np.ascontiguousarray(x[start : start + BLOCK])
        index = faiss.IndexFlatIP(dim)
        index.add(block)
        s, i = index.search(q, 10)
        s_all, i_all = np.hstack([best_s, s]), np.hstack([best_i, i + start])
        order = np.argsort(-s_all, axis=1, kind="stable")[:, :10]
        best_s, best_i = np.take_along_axis(s_all, order, 1), np.take_along_axis(i_all, order, 1)
    np.save(path, best_i)
    print(f"ground truth {n} x {dim}: {time.perf_counter() - t:.0f} s")
    return best_i


def server_rss_mib() -> float | None:
    """Resident memory of a local Milvus server process (the `milvus` binary), in MiB."""
    out = subprocess.run(["pgrep", "-x", "milvus"], capture_output=True, text=True).stdout.split()
    if not out:
        return None
    for line in Path(f"/proc/{out[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def emit(row: dict[str, Any], results: Path) -> None:
    """Print one result row and append it to the results file."""
    print(json.dumps(row))
    with results.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def recall(found: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(w)) / 10 for f, w in zip(found, want, strict=True)]))


def latency(search: Any, queries: np.ndarray) -> tuple[float, float]:
    lat = []
    for q in queries[:N_LATENCY]:
        t = time.perf_counter()
        search(q)
        lat.append((time.perf_counter() - t) * 1000)
    return pct(lat, 50), pct(lat, 95)


def milvus_runs(
    client: Any, kind: str, server: bool, x: np.ndarray, queries: np.ndarray, want: np.ndarray, n: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Recall@10 and single-query latency of collection "c" at each ef / nprobe. For IVF_PQ also
    what `convir search` does on a Milvus IVF_PQ store: its candidates re-scored exactly."""
    from convir.index.vector import REFINE_FACTOR, per_million

    big = n >= 1_000_000 and not server  # Lite searches exhaustively: fewer queries (20 timed at
    # 5M, seconds each), one ef at 1M+
    nq, nlat = (200, 20 if n >= 5_000_000 else 50) if big else (N_QUERIES, N_LATENCY)
    sweep: list[dict[str, Any]] = [{"ef": ef} for ef in ([128] if big else [64, 128, 256])]
    if kind != "HNSW":  # convir searches IVF with nprobe 32; the server cases show the curve
        sweep = [{"nprobe": p} for p in ([16, 32, 64, 128] if server else [32])]
    runs = []
    for sp in sweep:
        for rescore in [1, per_million(REFINE_FACTOR, n)] if kind == "IVF_PQ" else [1]:

            def search(qs: np.ndarray, sp: dict[str, Any] = sp, r: int = rescore) -> list[list[int]]:
                res = client.search("c", data=qs.tolist(), limit=10 * r, search_params={"params": sp})
                out = []
                for q, hits in zip(qs, res, strict=True):
                    ids = np.asarray([h["id"] for h in hits], dtype=np.int64)
                    if r > 1 and len(ids):  # exact inner products of the candidates, best 10
                        exact = np.asarray(x[ids]) @ q
                        ids = ids[np.argsort(-exact)]
                    out.append(list(ids[:10]) + [-1] * (10 - min(len(ids), 10)))
                return out

            found: list[list[int]] = []
            for start in range(0, nq, 100):
                found += search(queries[start : start + 100])
            search(queries[-1:])  # warm-up (the first search loads segment indexes)
            p50, p95 = latency(lambda q, f=search: f(q[None, :]), queries[:nlat])
            got = recall(np.asarray(found), want[:nq])
            extra = {"rescored": rescore * 10} if rescore > 1 else {}
            runs.append({**sp, **extra, "recall10": got, "p50_ms": p50, "p95_ms": p95})
    return runs, {"recall": nq, "latency": nlat}


def run_case(case: str, work: Path, dim: int, n: int, results: Path, milvus_uri: str = "") -> None:
    x, queries, want = open_gallery(work, dim, n), np.load(work / f"queries_{dim}.npy"), truth(work, dim, n)
    row: dict[str, Any] = {"case": case, "n": n, "dim": dim, "uptime_before": uptime(), "machine": machine()}
    base_mem = mem()["RssAnon"]
    t = time.perf_counter()
    if case.startswith("faiss"):
        import faiss

        from convir.index.vector import AnnIndex, AnnParams

        p = AnnParams()
        kind = case.split("-")[1]
        index = None
        if kind == "flat" and n * dim * 4 <= 2 * 1024**3:  # as convir's Build: in RAM up to 2 GiB
            x = np.array(x)  # a copy in RAM
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p.hnsw_ef_construction
            for start in range(0, n, BLOCK):
                index.add(np.ascontiguousarray(x[start : start + BLOCK]))
        elif kind == "ivfpq":
            from convir.index.vector import ivfpq_layout, ivfpq_train_rows

            nlist, m, nbits = ivfpq_layout(n, dim)
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
            sample = ivfpq_train_rows(n, nlist)  # exactly what `convir index --ann ivfpq` trains on
            index.train(np.ascontiguousarray(x[sample]))
            for start in range(0, n, BLOCK):
                index.add(np.ascontiguousarray(x[start : start + BLOCK]))
            row["ivf"] = {"nlist": nlist, "m": m, "nbits": nbits, "trained_on": len(sample)}
        row["build_s"] = time.perf_counter() - t
        row["mem_after_build"] = mem()
        row["index_mib"] = mem()["RssAnon"] - base_mem
        if index is not None:
            tmp = work / f"_{case}.faiss"
            faiss.write_index(index, str(tmp))
            row["disk_mib"] = tmp.stat().st_size / 2**20
            tmp.unlink()
        else:
            row["disk_mib"] = n * dim * 4 / 2**20
        ann = AnnIndex(x, kind, index, p)
        # the knobs each kind searches with: efSearch (HNSW); nprobe and the candidates convir
        # re-scores exactly ("rescored" = k x refine_factor) for IVF-PQ; none (flat)
        settings: list[dict[str, Any]] = [{"ef": None}]
        if kind == "hnsw":
            settings = [{"ef": ef} for ef in (32, 64, 128, 256, 512)]
        if kind == "ivfpq":
            settings = [{"nprobe": pr, "rescored": 200} for pr in (16, 32, 64, 128)]
            settings += [{"nprobe": 32, "rescored": c} for c in (500, 1000, 2000)]
        row["runs"] = []
        for knob in settings:
            if knob.get("ef") is not None:
                ann.params.hnsw_ef_search = index.hnsw.efSearch = knob["ef"]
            if "nprobe" in knob:
                ann.params.ivf_nprobe = index.nprobe = min(knob["nprobe"], index.nlist)
                ann.params.refine_factor = knob["rescored"] // 10
            nq = N_QUERIES if n <= 1_000_000 or kind != "flat" else 100
            _, found = ann.search(queries[:nq], 10)
            p50, p95 = latency(lambda q: ann.search(q, 10), queries if nq == N_QUERIES else queries[:20])
            row["runs"].append({**knob, "recall10": recall(found, want[:nq]), "p50_ms": p50, "p95_ms": p95})
    else:
        from pymilvus import DataType, MilvusClient

        server = case.startswith("milvus-server-")  # a Milvus server at --milvus-uri, not Lite
        kinds = {"hnsw": "HNSW", "ivfsq8": "IVF_SQ8", "flat": "FLAT", "ivfpq": "IVF_PQ"}
        kind = kinds[case.rsplit("-", 1)[1]]
        db = work / f"_{case}_{dim}_{n}.db"
        shutil.rmtree(db, ignore_errors=True)
        client = MilvusClient(milvus_uri if server else str(db))
        server_before = server_rss_mib() if server else None
        if server and client.has_collection("c"):
            client.drop_collection("c")
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        ip = client.prepare_index_params()
        params = {"M": 32, "efConstruction": 80} if kind == "HNSW" else {}
        if kind == "IVF_SQ8":
            params = {"nlist": max(16, min(int(4 * math.sqrt(min(n, 100_000))), 65536))}
        if kind == "IVF_PQ":  # what `convir index --ann ivfpq` asks Milvus for: lists per segment, m dim/8
            from convir.index.vector import ivfpq_layout
            from convir.store.milvus import milvus_nlist

            params = {"nlist": milvus_nlist(n, dim), "m": ivfpq_layout(n, dim)[1], "nbits": 8}
        ip.add_index("vec", index_type=kind, metric_type="IP", params=params)
        client.create_collection("c", schema=schema, index_params=ip)
        step = 5000
        for start in range(0, n, step):
            block = np.asarray(x[start : start + step])
            client.insert("c", [{"id": start + i, "vec": v} for i, v in enumerate(block)])
        client.flush("c")
        row["inserted_s"] = time.perf_counter() - t
        while True:  # wait for every segment's index, including segments re-indexed after compaction
            info = client.describe_index("c", "vec")
            indexed = int(info.get("indexed_rows", n)) >= n
            if indexed and "indexed_all_s" not in row:  # every row searchable through an index
                row["indexed_all_s"] = time.perf_counter() - t
            if int(info.get("pending_index_rows", 0)) == 0 and indexed:
                break
            time.sleep(2)
        client.load_collection("c")
        row["build_s"] = time.perf_counter() - t
        row["mem_after_build"] = mem()
        row["index_mib"] = mem()["RssAnon"] - base_mem
        row["disk_mib"] = sum(f.stat().st_size for f in db.rglob("*") if f.is_file()) / 2**20
        if server:  # the index lives in the server process: its RSS, and its data folder on disk
            row["server_rss_mib"] = {"before": server_before, "after_load": server_rss_mib()}
            row["index_mib"] = (server_rss_mib() or 0) - (server_before or 0)
            data = Path(os.environ.get("MILVUS_DATA", "/nonexistent"))
            row["disk_mib"] = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 2**20
            row["milvus_server"] = {"uri": milvus_uri, "version": client.get_server_version()}
        segment_mb = os.environ.get("CONVIR_MILVUS_SEGMENT_MB")  # what milvus_nlist assumed, when set
        row["milvus"] = {"index": kind, "params": params, "segment_mb_env": segment_mb}
        row["runs"], row["queries"] = milvus_runs(client, kind, server, x, queries, want, n)
        if server:
            client.drop_collection("c")
        client.close()
        shutil.rmtree(db, ignore_errors=True)
    row["peak_rss_mib"] = mem()["VmHWM"]
    row["uptime_after"] = uptime()
    emit(row, results)


def query_live(case: str, work: Path, dim: int, n: int, results: Path, milvus_uri: str) -> None:
    """The query half of a milvus-server-* case against the collection a running case is still
    building (every row indexed, compaction still re-indexing merged segments): the figures a
    user gets once the collection is searchable, without waiting for compaction to settle."""
    from pymilvus import MilvusClient

    queries, want = np.load(work / f"queries_{dim}.npy"), truth(work, dim, n)
    client = MilvusClient(milvus_uri)
    info = client.describe_index("c", "vec")
    if int(info.get("total_rows", 0)) != n or int(info.get("indexed_rows", 0)) < n:
        raise SystemExit(f"collection c is not a fully indexed {n:,}-row collection: {info}")
    kind = str(info["index_type"])
    client.load_collection("c")
    row: dict[str, Any] = {"case": case, "n": n, "dim": dim, "live": True, "uptime_before": uptime()}
    row["machine"] = machine()
    row["milvus"] = {"index": kind, "describe_index": info, "version": client.get_server_version()}
    row["runs"], row["queries"] = milvus_runs(
        client, kind, True, open_gallery(work, dim, n), queries, want, n
    )
    row["uptime_after"] = uptime()
    emit(row, results)


def ingest_bench(work: Path, workers: list[int], results: Path, reps: int) -> None:
    """coco5k + flickr8k-1k through `convir index` in one process and with 1..k Ray workers,
    interleaved repetitions; encode throughput from each run's report."""
    galleries = [(SHARED / "coco5k", "coco-captions"), (SHARED / "flickr8k-1k", "flickr8k")]
    configs: list[list[str]] = [[]] + [["--ray", "local", "--ray-workers", str(w)] for w in workers]
    for rep in range(reps):
        for extra in configs:
            items = enc_s = wall = 0.0
            load = uptime()
            for path, fmt in galleries:
                out = work / f"_ingest_{path.name}"
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                res = subprocess.run(
                    [sys.executable, "-m", "convir.cli", "index", str(path), "--format", fmt,
                     "--out", str(out), "--json", *extra],
                    capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO,
                )  # fmt: skip
                wall += time.perf_counter() - t
                rep_ = json.loads(res.stdout)
                items += rep_["added"]
                enc_s += rep_["encode_seconds"]
                shutil.rmtree(out, ignore_errors=True)
            row = {
                "case": "ingest",
                "rep": rep,
                "config": " ".join(extra) or "single process",
                "items": items,
                "encode_s": enc_s,
                "items_per_s": items / enc_s,
                "wall_s": wall,
                "uptime": load,
            }
            emit(row, results)


_VIT = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size")
VIT_CONFIGS = {
    "ViT-B/32": {**dict(zip(_VIT, (768, 3072, 12, 12, 32), strict=True)), "projection_dim": 512},
    "ViT-L/14": {**dict(zip(_VIT, (1024, 4096, 24, 16, 14), strict=True)), "projection_dim": 768},
}


def flops(results: Path) -> None:
    """FLOPs per 224x224 image of the CLIP image towers (random weights: the cost does not
    depend on them; no pretrained weights exist here) and their CPU throughput here."""
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.set_num_threads(2)
    for name, cfg in VIT_CONFIGS.items():
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, **cfg)).eval()
        x = torch.randn(8, 3, 224, 224)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(pixel_values=x[:1])
        with torch.no_grad():
            model(pixel_values=x)
            t = time.perf_counter()
            model(pixel_values=x)
            dt = time.perf_counter() - t
        row = {"case": "flops", "model": name, "gflop_per_image": fc.get_total_flops() / 1e9,
               "cpu_images_per_s": 8 / dt, "uptime": uptime()}  # fmt: skip
        emit(row, results)


def table(results: Path) -> None:
    """The measured cases as the markdown table of docs/benchmarks.md (last run of each case)."""
    rows: dict[tuple[str, int, int], dict[str, Any]] = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        if "runs" in r:
            rows[(r["case"] + (" (live)" if r.get("live") else ""), r["dim"], r["n"])] = r
    cols = ["case", "dim", "items", "build s", "index MiB", "on disk MiB", "peak RSS MiB", "ef / nprobe"]
    cols += ["recall@10", "p50 ms", "p95 ms", "load (1 min)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for (case, dim, n), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        load = r["uptime_before"].split("load average:")[1].split(",")[0].strip()
        for run in r["runs"]:
            live = r.get("live")  # `scale.py query`: queried while compaction re-indexed; no build figures
            cells = [
                case,
                dim,
                f"{n:,}",
                "-" if live else f"{r['build_s']:.1f}",
                "-" if live else f"{r['index_mib']:,.0f}",
                # a server's data folder also holds earlier (dropped, not yet compacted) collections
                "-" if live or "milvus_server" in r else f"{r['disk_mib']:,.0f}",
            ]
            knob = run.get("ef") or (f"nprobe {run['nprobe']}" if run.get("nprobe") else "-")
            if run.get("rescored"):
                knob += f", {run['rescored']} re-scored"
            cells += ["-" if live else f"{r['peak_rss_mib']:,.0f}", knob, f"{run['recall10']:.4f}"]
            cells += [f"{run['p50_ms']:.2f}", f"{run['p95_ms']:.1f}", load]
            print("| " + " | ".join(str(c) for c in cells) + " |")


def default_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run at efSearch 128 / nprobe 32 / 200 re-scored: convir's defaults up to 1M items,
    one setting across sizes for the plot."""
    usual = [
        x
        for x in runs
        if x.get("ef") in (None, 128) and x.get("nprobe") in (None, 32) and x.get("rescored") in (None, 200)
    ]
    return next((x for x in usual if not x.get("rescored")), usual[0] if usual else runs[0])


def plot(results: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, dim in zip(axes, (384, 512), strict=True):
        for case in (
            "faiss-flat",
            "faiss-hnsw",
            "faiss-ivfpq",
            "milvus-hnsw",
            "milvus-server-hnsw",
            "milvus-server-ivfpq",
        ):
            pts = {}
            for r in rows:
                if r.get("case") == case and r["dim"] == dim:
                    pts[r["n"]] = default_run(r["runs"])["p50_ms"]
            if pts:
                ns = sorted(pts)
                ax.plot(
                    ns,
                    [pts[n] for n in ns],
                    marker="o",
                    label=case.replace("milvus-hnsw", "milvus-lite-hnsw"),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"dimension {dim}")
        ax.set_xlabel("items")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency per query (ms), top-10")
    axes[0].legend()
    fig.suptitle("Query latency vs gallery size (2 shared cores; HNSW efSearch 128, IVF nprobe 32)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["data", "case", "query", "ingest", "flops", "table", "plot"])
    ap.add_argument("case", nargs="?")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/convir_scale"))
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "scale.jsonl")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument(
        "--milvus-uri", default="http://localhost:19530", help="server for the milvus-server-* cases"
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if args.what == "data":
        make_data(args.work, args.dim, args.n)
    elif args.what == "case":
        run_case(args.case, args.work, args.dim, args.n, args.results, args.milvus_uri)
    elif args.what == "query":
        query_live(args.case, args.work, args.dim, args.n, args.results, args.milvus_uri)
    elif args.what == "ingest":
        ingest_bench(args.work, args.workers, args.results, args.reps)
    elif args.what == "flops":
        flops(args.results)
    elif args.what == "table":
        table(args.results)
    else:
        plot(args.results, REPO / "docs" / "img" / "scale_latency.png")


if __name__ == "__main__":
    main()
