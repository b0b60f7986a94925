"""Helpers for the server tests: index the bundled demo gallery with the real CLI and run the
real ``convir serve`` in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import run_cli

# the demo dialogue of convir.demo: a vague description narrowed down to one image
DESCRIPTION = "a boat on the water"
TARGET = "sailboat_red_sail_sunset.png"


def index_demo_gallery(tmp: Path) -> Path:
    """Copy the bundled 42-image demo gallery and index it with ``convir index`` (caption:minilm)."""
    from convir.demo import gallery_path

    gallery = tmp / "gallery"
    shutil.copytree(gallery_path(), gallery)
    res = run_cli("index", str(gallery), "--out", str(tmp / "ix"), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return tmp / "ix"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``convir serve INDEX --port P ...`` as a subprocess; ``url`` once healthy."""

    def __init__(self, index_dir: Path, cache: Path, *args: str, token: str | None = None) -> None:
        self.index_dir, self.cache, self.args, self.token = index_dir, cache, args, token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cache / f"serve-{self.port}.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self, timeout: float = 180) -> Server:
        env = {**os.environ, "CONVIR_CACHE": str(self.cache), "COLUMNS": "200"}
        env.pop("CONVIR_TOKEN", None)
        if self.token:
            env["CONVIR_TOKEN"] = self.token
        self.cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "convir.cli", "serve", str(self.index_dir), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*cmd, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, f"convir serve exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/api/health", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"convir serve did not start in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
