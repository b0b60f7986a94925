"""The pipelined image encoding (decoding threads ahead of the model) on a real tiny open_clip
model: it must give exactly what the sequential loop gives, report the same bad files, and
refuse bad settings with one clear line. No timing here (that is benchmarks/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convir._compat import ensure_torchvision
from convir.encoders.base import encode_images_skipping
from convir.encoders.pipeline import EncodeSettings, encode_images_pipelined
from convir.errors import ConvirError

ensure_torchvision()
torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP  # noqa: E402
from convir.encoders.openclip import OpenClipEncoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> OpenClipEncoder:
    d = tmp_path_factory.mktemp("arch")
    (d / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d)
    return OpenClipEncoder(TINY_ARCH)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eleven photos of different sizes and modes, with a corrupt and a missing file among them."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    out: list[Path] = []
    for i in range(9):
        h, w = 20 + 7 * i, 60 - 4 * i
        img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
        p = d / f"p{i}.{'jpg' if i % 2 else 'png'}"
        (img.convert("L") if i == 4 else img).save(p)
        out.append(p)
    (d / "bad.jpg").write_bytes(b"not an image at all" * 20)
    out.insert(3, d / "bad.jpg")
    out.insert(7, d / "missing.png")
    return out


@pytest.mark.parametrize("workers,batch", [(0, 4), (1, 3), (3, 4), (4, 64), (2, 1)])
def test_pipelined_matches_sequential(
    encoder: OpenClipEncoder, paths: list[Path], workers: int, batch: int
) -> None:
    ref, ref_ok, ref_bad = encode_images_skipping(encoder, paths, batch_size=batch)
    vecs, ok, bad = encode_images_pipelined(encoder, paths, EncodeSettings(batch, None, workers))
    assert ok == ref_ok and [i for i, _ in bad] == [i for i, _ in ref_bad] == [3, 7]
    assert [why for _, why in bad] == [why for _, why in ref_bad]
    np.testing.assert_array_equal(vecs, ref)  # same inputs, same batches: bit for bit


def test_batching_does_not_change_vectors_beyond_float_noise(
    encoder: OpenClipEncoder, paths: list[Path]
) -> None:
    one, ok1, _ = encode_images_pipelined(encoder, paths, EncodeSettings(1, None, 2))
    many, ok2, _ = encode_images_pipelined(encoder, paths, EncodeSettings(5, None, 2))
    assert ok1 == ok2
    np.testing.assert_allclose(one, many, atol=1e-5)
    assert np.allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)


def test_a_shared_pool_is_left_running(encoder: OpenClipEncoder, paths: list[Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        a, _, _ = encode_images_pipelined(encoder, paths[:5], EncodeSettings(2), pool=pool)
        b, _, _ = encode_images_pipelined(encoder, paths[:5], EncodeSettings(2), pool=pool)
        assert pool.submit(lambda: 7).result() == 7
    np.testing.assert_array_equal(a, b)


def test_only_failures_gives_an_empty_matrix(encoder: OpenClipEncoder, paths: list[Path]) -> None:
    vecs, ok, bad = encode_images_pipelined(encoder, [paths[3], paths[7]], EncodeSettings(2, None, 2))
    assert vecs.shape == (0, encoder.dim) and ok == [] and len(bad) == 2


@pytest.mark.parametrize(
    "settings,match",
    [
        (EncodeSettings(0), "--image-batch must be a positive integer"),
        (EncodeSettings(8, 0), "--threads must be a positive integer"),
        (EncodeSettings(8, None, -1), "--decode-workers must be 0"),
        (EncodeSettings(8, None, 1000), "more threads than is useful"),
        (EncodeSettings(True), "--image-batch"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_are_one_clear_line(settings: EncodeSettings, match: str) -> None:
    with pytest.raises(ConvirError, match=match):
        settings.validate()


def test_threads_setting_is_applied_only_when_asked() -> None:
    before = torch.get_num_threads()
    try:
        EncodeSettings().apply_threads()
        assert torch.get_num_threads() == before
        EncodeSettings(threads=1).apply_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
