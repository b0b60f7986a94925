"""Encoder protocols shared by indexing, search and the conversation loop.

Vectors are float32 numpy arrays of shape (n, dim), L2-normalised, so inner product is
cosine similarity and every index can use exact/approximate inner-product search.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

LongTextPolicy = Literal["truncate", "chunk"]
LONG_TEXT_POLICIES = ("chunk", "truncate")
# Largest image decoded (width x height): 100 MP covers phone and most camera photos; RGB
# decoding needs 3 bytes per pixel (300 MB here), so a 20000 x 20000 "decompression bomb"
# (1.2 GB) is refused from its header before any pixel is decoded. `--max-pixels` changes it.
DEFAULT_MAX_PIXELS = 100_000_000


@runtime_checkable
class TextEncoder(Protocol):
    """Maps text to the shared embedding space."""

    spec: str  # canonical spec string, stored in the index so it can be re-opened
    dim: int

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        ...


@runtime_checkable
class ImageEncoder(Protocol):
    """Maps images to the same space as its text tower (CLIP-like models)."""

    spec: str
    dim: int

    def encode_images(self, paths: list[Path], batch_size: int = 32) -> np.ndarray:
        """(len(paths), dim) float32, L2-normalised. Raises ImageReadError for a bad file."""
        ...


class ImageReadError(Exception):
    """One image could not be read/decoded; ingest skips the item and reports it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def has_image_tower(encoder: object) -> bool:
    return isinstance(encoder, ImageEncoder) and getattr(encoder, "supports_images", True)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _open_limited(path: Path, max_pixels: int | None) -> tuple[Image.Image, int]:
    """``Image.open`` (header only) under our pixel limit instead of Pillow's global one.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that; we check the
    limit ourselves right after reading the header, so its warning is noise and its limit is
    raised when the caller allows more."""
    import warnings

    from PIL import Image

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        from convir.gallery.photometa import open_image  # HEIC/HEIF and RAW too

        return open_image(path), limit


def too_large(width: int, height: int, limit: int) -> str:
    return (
        f"image too large: {width} x {height} = {width * height:,} pixels, over the limit of "
        f"{limit:,} (--max-pixels)"
    )


def _bomb(exc: Exception, max_pixels: int | None) -> str:
    """Pillow refused the header itself (over twice its limit): say it in our terms."""
    import re

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "its header"
    return f"image too large: {size}, over the limit of {limit:,} (--max-pixels)"


def check_image(path: Path | str, max_pixels: int | None = None) -> str | None:
    """Why ``path`` is not a usable image (unreadable, corrupt, over the pixel limit), or None.

    Reads the header and verifies the file without decoding its pixels: the check a caption
    encoder makes of an item's image, where no pixels are needed."""
    from PIL import Image, UnidentifiedImageError

    try:
        img, limit = _open_limited(Path(path), max_pixels)
        with img:
            w, h = img.size
            if w * h > limit:
                return too_large(w, h, limit)
            img.verify()
    except Image.DecompressionBombError as exc:
        return _bomb(exc, max_pixels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        return f"unreadable or corrupt image ({type(exc).__name__}: {exc})"
    return None


def load_image(path: Path | str, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode one image as RGB, raising :class:`ImageReadError` on any failure.

    Decoding happens here, one file at a time, so a corrupt or truncated file fails on its own
    instead of half-way through a batch; an image over ``max_pixels`` (default
    :data:`DEFAULT_MAX_PIXELS`) fails from its header, before decoding. EXIF orientation is
    applied so phone photos are seen upright, as a person browsing the gallery sees them.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        img, limit = _open_limited(path, max_pixels)
        with img:
            w, h = img.size
            if w * h > limit:
                raise ImageReadError(path, too_large(w, h, limit))
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # malformed EXIF is no reason to drop a decodable image
                upright = img
            return upright.convert("RGB")  # convert() decodes all pixels: truncated data fails here
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, _bomb(exc, max_pixels)) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        # Image.UnidentifiedImageError (not an image) is an OSError; PIL raises the others for
        # some malformed headers/chunks (MemoryError: a file whose header asks for absurd buffers).
        raise ImageReadError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def _loader(encoder: object, max_pixels: int | None) -> Any:
    """The encoder's own image loader (or :func:`load_image`) applying ``max_pixels``."""
    import functools
    import inspect

    load = getattr(encoder, "load_image", None)
    if load is None:
        return functools.partial(load_image, max_pixels=max_pixels)
    if max_pixels is not None and "max_pixels" in inspect.signature(load).parameters:
        return functools.partial(load, max_pixels=max_pixels)
    return load


def encode_images_skipping(
    encoder: ImageEncoder, paths: Sequence[Path | str], batch_size: int = 32, max_pixels: int | None = None
) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Encode every readable image, skipping (and reporting) the unreadable ones.

    Returns ``(vectors, ok_indices, failures)``: ``vectors[k]`` belongs to ``paths[ok_indices[k]]``
    and ``failures`` lists ``(index, reason)``. One bad file in a large gallery must not stop the
    ingest, and decoding happens once per image when the encoder offers ``load_image`` and
    ``encode_pil`` (both CLIP encoders do); other encoders fall back to ``encode_images``.
    Images over ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`) are failures too.
    """
    load = _loader(encoder, max_pixels)
    encode_pil = getattr(encoder, "encode_pil", None)
    chunks: list[np.ndarray] = []
    ok: list[int] = []
    failures: list[tuple[int, str]] = []
    step = max(1, batch_size)
    for start in range(0, len(paths), step):
        good_idx: list[int] = []
        images: list[Image.Image] = []
        for i in range(start, min(start + step, len(paths))):
            try:
                images.append(load(Path(paths[i])))
            except ImageReadError as exc:
                failures.append((i, exc.reason))
                continue
            good_idx.append(i)
        if not good_idx:
            continue
        if encode_pil is not None:
            chunks.append(encode_pil(images))
        else:
            chunks.append(encoder.encode_images([Path(paths[i]) for i in good_idx], batch_size=step))
        ok.extend(good_idx)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)
    return vectors, ok, failures


def resolve_device(device: str) -> str:
    """Fail with an actionable message instead of torch's assertion deep inside ``.to()``."""
    import torch

    from convir.errors import SpecError

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise SpecError(f"unknown torch device {device!r} (use 'cpu', 'cuda', 'cuda:1', 'mps')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SpecError(f"device {device!r} requested but MPS is not available here; use device='cpu'")
    return str(dev)


# --dtype values: "auto" keeps float32 on CPU (half precision there is slow or unsupported) and
# the checkpoint's own dtype on accelerators.
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def check_dtype(dtype: str | None, device: str = "cpu") -> str:
    """Canonical dtype name, validated without importing torch (so the CLI can fail fast)."""
    from convir.errors import SpecError

    name = _DTYPE_ALIASES.get((dtype or "auto").strip().lower(), (dtype or "auto").strip().lower())
    if name not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; use one of: {', '.join(DTYPES)}")
    if name == "float16" and device.strip().lower().startswith("cpu"):
        raise SpecError("float16 is not supported on the CPU; use --dtype float32 (or bfloat16)")
    return name


def torch_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for ``dtype`` on ``device`` ("auto" on an accelerator: None = as stored)."""
    import torch

    name = check_dtype(dtype, device)
    if name == "auto":
        return torch.float32 if device.startswith("cpu") else None
    return getattr(torch, name)


class ImageTextEncoder:
    """Shared text batching, long-text policy and image loading of the image-text encoders.

    Subclasses set ``spec``, ``dim``, ``max_tokens``, ``long_text`` and implement
    ``_encode_text_batch``, ``count_tokens`` and ``encode_pil``.
    """

    spec: str
    dim: int
    max_tokens: int
    long_text: str
    supports_images = True

    def _encode_text_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def encode_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; long texts follow ``self.long_text``."""
        from convir.encoders.longtext import encode_long

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = max(1, batch_size)

        def enc(batch: list[str]) -> np.ndarray:
            return np.concatenate(
                [self._encode_text_batch(batch[i : i + step]) for i in range(0, len(batch), step)]
            )

        return encode_long(list(texts), enc, self.count_tokens, self.max_tokens, self.long_text, self.spec)

    def load_image(self, path: Path | str, max_pixels: int | None = None) -> Image.Image:
        """Decoded RGB image; raises ImageReadError for missing/corrupt/non-image/oversized files."""
        return load_image(path, max_pixels)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def encode_images(self, paths: list[Path], batch_size: int = 32) -> np.ndarray:
        """(len(paths), dim) float32, L2-normalised; the first bad file raises ImageReadError."""
        step = max(1, batch_size)
        out = [
            self.encode_pil([self.load_image(p) for p in paths[i : i + step]])
            for i in range(0, len(paths), step)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def encode_images_safe(
        self, paths: Sequence[Path | str], batch_size: int = 32, max_pixels: int | None = None
    ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
        """Vectors for the readable images, their indices, and (index, reason) for the rest."""
        return encode_images_skipping(self, paths, batch_size, max_pixels)
