"""HTTP service load: concurrent conversation sessions and search-only latency over loopback.

Starts the real ``convir serve INDEX_DIR --llm SPEC`` (uvicorn, subprocess) with a fresh LLM
cache, runs one session to measure cold turns (the LLM generates for real) and to fill the
cache, then SESSIONS concurrent sessions x TURNS turns of the same dialogue (the cached LLM
path), checks that no session lost or reordered a turn, and times ``GET /api/search`` with
coco5k captions as queries.

``--uncached``: instead, SESSIONS concurrent sessions that each describe a different coco5k
caption (so no LLM call is shared and the disk cache cannot answer): what a full turn costs
when every session makes the real LLM work, and how requests queue for the one model (each
session's stored history must match what it sent, in order; every request's status is
counted, so a request that timed out or failed is reported, not lost).

Usage: python benchmarks/server_load.py INDEX_DIR [--sessions 20] [--turns 5] [--llm llamacpp:smollm2]
       [--uncached]
(build INDEX_DIR with: convir index --format coco-captions ../shared/data/coco5k --out INDEX_DIR)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from _common import SHARED, machine, pct

DESCRIPTION = "a man riding a wave on a surfboard"
ANSWERS = [
    "it is a sunny day",
    "he wears a black wetsuit",
    "the wave is big",
    "no other people",
    "in the ocean",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(index_dir: str, llm: str, cache: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CONVIR_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "convir.cli", "serve", index_dir, "--port", str(port), "--llm", llm]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"convir serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("convir serve did not start in 5 minutes")


def session(
    client: httpx.Client, url: str, turns: int, description: str = DESCRIPTION, shift: int = 0
) -> tuple[dict[str, Any], float, list[float]]:
    t0 = time.perf_counter()
    res = client.post(f"{url}/api/sessions", json={"description": description})
    create_s = time.perf_counter() - t0
    res.raise_for_status()
    v = res.json()
    latencies = []
    for text in ((ANSWERS[shift % len(ANSWERS) :] + ANSWERS[: shift % len(ANSWERS)]) * turns)[:turns]:
        body = {"kind": "answer" if v["question"] else "say", "text": text}
        t0 = time.perf_counter()
        res = client.post(f"{url}/api/sessions/{v['id']}/turns", json=body)
        latencies.append(time.perf_counter() - t0)
        res.raise_for_status()
        v = res.json()
    return v, create_s, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index_dir")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--llm", default="llamacpp:smollm2")
    ap.add_argument("--queries", type=int, default=300, help="search-only requests")
    ap.add_argument("--uncached", action="store_true", help="every session different: the real LLM works")
    args = ap.parse_args()
    from convir.datasets import load_coco5k

    items = load_coco5k(SHARED / "coco5k")
    queries = [it.captions[-1] for it in items[: args.queries]]
    if args.uncached:
        return uncached(args, [it.captions[0] for it in items[4000 : 4000 + args.sessions]])
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        proc, url = start(args.index_dir, args.llm, Path(cache))
        startup_s = time.perf_counter() - t0
        try:
            with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.sessions + 5)) as client:
                warm, warm_create, cold = session(client, url, args.turns)
                t0 = time.perf_counter()
                # one client per session: each keeps its own owner-secret cookie (sessions are private)
                clients = [httpx.Client(timeout=600) for _ in range(args.sessions)]
                with ThreadPoolExecutor(args.sessions) as pool:
                    runs = list(pool.map(lambda c: session(c, url, args.turns), clients))
                wall = time.perf_counter() - t0
                lost = 0
                for c, (v, _, _) in zip(clients, runs, strict=True):
                    stored = c.get(f"{url}/api/sessions/{v['id']}").json()
                    c.close()
                    texts = [h["text"] for h in stored["history"][1:]]
                    lost += stored["turn"] != args.turns or texts != [h["text"] for h in warm["history"][1:]]
                client.get(f"{url}/api/search", params={"q": queries[0]})  # warm
                took, rtt = [], []
                for q in queries:
                    t0 = time.perf_counter()
                    out = client.get(f"{url}/api/search", params={"q": q, "k": 10}).json()
                    rtt.append((time.perf_counter() - t0) * 1000)
                    took.append(out["took_ms"])
                health = client.get(f"{url}/api/health").json()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    turns = [x * 1000 for _, _, ls in runs for x in ls]
    creates = [c * 1000 for _, c, _ in runs]
    print(f"{health['items']} items, llm {args.llm}, server start {startup_s:.1f}s [{machine()}]")
    print(
        f"  cold session (LLM generating): create {warm_create * 1000:.0f} ms, "
        f"turn p50 {pct([c * 1000 for c in cold], 50):.0f} ms, p95 {pct([c * 1000 for c in cold], 95):.0f} ms"
    )
    print(
        f"  {args.sessions} concurrent sessions x {args.turns} turns (cached LLM): {wall:.1f}s wall, "
        f"{len(turns) / wall:.1f} turns/s; turn p50 {pct(turns, 50):.0f} ms, p95 {pct(turns, 95):.0f} ms; "
        f"create p50 {pct(creates, 50):.0f} ms; sessions with a lost or reordered turn: {lost}"
    )
    print(
        f"  search-only GET /api/search ({len(queries)} q, sequential): "
        f"round trip p50 {pct(rtt, 50):.1f} ms, p95 {pct(rtt, 95):.1f} ms; "
        f"server-side p50 {pct(took, 50):.1f} ms"
    )


def uncached(args: argparse.Namespace, descriptions: list[str]) -> None:
    """SESSIONS different sessions at once, each turn computed by the LLM (empty cache)."""
    with tempfile.TemporaryDirectory() as cache:
        proc, url = start(args.index_dir, args.llm, Path(cache))
        errors: list[str] = []

        # one client per session: each keeps its own owner-secret cookie (sessions are private)
        clients = [httpx.Client(timeout=1800) for _ in descriptions]

        def one(i: int) -> tuple[dict[str, Any], float, list[float]] | None:
            try:
                return session(clients[i], url, args.turns, descriptions[i], shift=i)
            except httpx.HTTPError as exc:  # a timeout or an error status: counted, not lost
                errors.append(f"session {i}: {type(exc).__name__}: {exc}")
                return None

        try:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.sessions) as pool:
                runs = list(pool.map(one, range(len(descriptions))))
            wall = time.perf_counter() - t0
            bad = 0
            for i, r in enumerate(runs):
                if r is None:
                    continue
                stored = clients[i].get(f"{url}/api/sessions/{r[0]['id']}").json()
                sent = ((ANSWERS[i % len(ANSWERS) :] + ANSWERS[: i % len(ANSWERS)]) * args.turns)[
                    : args.turns
                ]
                texts = [h["text"] for h in stored["history"][1:]]
                bad += stored["turn"] != args.turns or texts != sent
        finally:
            for c in clients:
                c.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    done = [r for r in runs if r is not None]
    turns = [x for _, _, ls in done for x in ls]
    creates = [c for _, c, _ in done]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"llm {args.llm}, {len(descriptions)} concurrent sessions x {args.turns} turns, every LLM call "
        f"computed [{machine()}; load at the end {load}]"
    )
    print(
        f"  wall {wall:.0f} s; full turn p50 {pct(turns, 50):.1f} s, p95 {pct(turns, 95):.1f} s, "
        f"max {max(turns):.1f} s; session create (first search + question) p50 {pct(creates, 50):.1f} s, "
        f"p95 {pct(creates, 95):.1f} s"
    )
    print(
        f"  sessions finished {len(done)} of {len(descriptions)}; failed or timed-out requests "
        f"{len(errors)}; sessions with a lost or reordered turn {bad}"
    )
    for e in errors[:5]:
        print("   ", e)


if __name__ == "__main__":
    main()
