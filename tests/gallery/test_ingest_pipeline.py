"""``convir index`` with an image encoder: the decoding threads and the model batch size change
nothing in the stored vectors, and bad --image-batch/--threads/--decode-workers values stop the
run with one line before anything is created or loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image, run_cli
from convir import ingest
from convir._compat import ensure_torchvision
from convir.encoders.pipeline import EncodeSettings
from convir.errors import ConvirError
from convir.gallery.store import Store

ensure_torchvision()
open_clip = pytest.importorskip("open_clip")

from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i in range(7):
        make_image(d / f"p{i}.png", (30 * i, 200 - 20 * i, 90), (40 + 5 * i, 30 + 3 * i))
    (d / "broken.jpg").write_bytes(b"nope" * 30)
    arch = tmp_path_factory.mktemp("arch")
    (arch / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(arch)
    return d


def _vectors(out: Path) -> dict[str, np.ndarray]:
    store = Store(out)
    try:
        _, ids, matrix, _ = store.snapshot(with_vectors=True)
    finally:
        store.close()
    return dict(zip(ids, np.asarray(matrix), strict=True))


def test_decoding_threads_and_batch_size_give_the_same_index(photos: Path, tmp_path: Path) -> None:
    spec = f"open_clip:{TINY_ARCH}"
    # Same torch threads for seq and par: only the decoding differs, so the vectors must be identical
    # (a different thread count may change float sums in the last bit, hence allclose for big).
    seq = ingest(photos, tmp_path / "seq", spec, batch_size=3, settings=EncodeSettings(2, 1, 0))
    par = ingest(photos, tmp_path / "par", spec, batch_size=3, settings=EncodeSettings(2, 1, 3))
    big = ingest(photos, tmp_path / "big", spec, settings=EncodeSettings(64, None, 2))
    assert seq.added == par.added == big.added == 7
    assert [f[0] for f in seq.failed] == [f[0] for f in par.failed] == [f[0] for f in big.failed]
    a, b, c = _vectors(tmp_path / "seq"), _vectors(tmp_path / "par"), _vectors(tmp_path / "big")
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_allclose(a[k], c[k], atol=1e-5)


def test_bad_settings_fail_before_anything_is_created(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvirError, match="--decode-workers must be 0"):
        ingest(photos, tmp_path / "ix", f"open_clip:{TINY_ARCH}", settings=EncodeSettings(8, None, -2))
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize("flag", ["--image-batch=0", "--threads=0", "--decode-workers=-1"])
def test_cli_refuses_bad_values_with_a_usage_error(photos: Path, tmp_path: Path, flag: str) -> None:
    res = run_cli("index", str(photos), "--out", str(tmp_path / "ix"), flag, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert flag.split("=")[0] in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "ix").exists()
