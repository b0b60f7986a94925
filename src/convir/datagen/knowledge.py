"""Which entities are related: the knowledge-graph step of ReCQR's Stage Two.

Stage Two pairs a first image I1 with a second image I2 whose caption mentions something
related to I1's (dog -> cat, surfboard -> wave), so the conversation can move from one to
the other. Relations come from (``--kg SPEC``):

* ``conceptnet:PATH`` — ConceptNet 5's published assertions file
  (``conceptnet-assertions-5.7.0.csv.gz``, or the uncompressed ``.csv``): tab-separated
  ``URI, relation, start, end, JSON info`` (the JSON holds ``weight``). The English-English
  edges of the relations in :data:`CONCEPTNET_RELATIONS` are indexed once into a SQLite file
  in the convir cache (keyed by the file's path, size and mtime; built under a temporary name
  and renamed, so an interrupted build is simply redone), then looked up by term.
* ``embedding`` / ``embedding:ENCODER`` — offline fallback: two entity words are related when
  the cosine of their text embeddings (default ``caption:minilm``) lies in
  ``[min_sim, max_sim)``: similar enough to be related, not so similar they are synonyms.

WordNet is not offered: its data is not installable from PyPI here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from convir.errors import ConvirError

log = logging.getLogger("convir")

KINDS = {
    "conceptnet": "conceptnet:PATH, ConceptNet 5 assertions CSV (.csv or .csv.gz) as published",
    "embedding": "embedding[:ENCODER], cosine of entity-word embeddings (default caption:minilm), offline",
}
# Relations that say two concepts belong together in a scene or a category.
CONCEPTNET_RELATIONS = frozenset(
    {
        "/r/RelatedTo",
        "/r/IsA",
        "/r/PartOf",
        "/r/HasA",
        "/r/UsedFor",
        "/r/CapableOf",
        "/r/AtLocation",
        "/r/LocatedNear",
        "/r/MadeOf",
        "/r/SimilarTo",
        "/r/Synonym",
        "/r/HasProperty",
        "/r/ReceivesAction",
        "/r/CreatedBy",
    }
)
_SCHEMA = """
CREATE TABLE edges (a TEXT NOT NULL, b TEXT NOT NULL, rel TEXT NOT NULL, weight REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INDEXES = "CREATE INDEX edges_a ON edges(a); CREATE INDEX edges_b ON edges(b);"


class Relation(Protocol):
    spec: str

    def neighbors(self, vocab: list[str]) -> dict[str, dict[str, float]]:
        """For each term of ``vocab``: the other vocab terms related to it, with a weight."""
        ...


def conceptnet_term(uri: str) -> str | None:
    """``/c/en/hot_dog/n/wn/food`` -> ``"hot dog"``; None for other languages or non-concepts."""
    parts = uri.split("/")
    if len(parts) < 4 or parts[1] != "c" or parts[2] != "en" or not parts[3]:
        return None
    return parts[3].replace("_", " ").lower()


def iter_assertions(path: Path) -> Iterator[tuple[str, str, str, float]]:
    """(relation, start term, end term, weight) of the English-English assertions of ``path``.

    Lines that are not 5 tab-separated fields, or whose JSON is broken, are skipped: one bad
    line of 34 million must not stop the build."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 5 or fields[1] not in CONCEPTNET_RELATIONS:
                continue
            a, b = conceptnet_term(fields[2]), conceptnet_term(fields[3])
            if a is None or b is None or a == b:
                continue
            try:
                weight = float(json.loads(fields[4]).get("weight", 1.0))
            except (ValueError, AttributeError):
                continue
            yield fields[1], a, b, weight


def _index_path(csv: Path) -> Path:
    from convir.paths import cache_dir

    st = csv.stat()
    key = hashlib.sha256(f"{csv.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "conceptnet" / f"{csv.name}.{key}.sqlite"


def build_conceptnet_index(
    csv: Path, target: Path | None = None, on_progress: Callable[[int], None] | None = None
) -> Path:
    """Index ``csv`` into SQLite (once; an existing finished index is reused)."""
    csv = Path(csv).expanduser()
    if not csv.is_file():
        raise ConvirError(
            f"ConceptNet assertions file {csv} not found: download conceptnet-assertions-5.7.0.csv.gz "
            "from the ConceptNet 5 downloads page, or use --kg embedding (offline)"
        )
    target = target or _index_path(csv)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.warning("indexing ConceptNet %s into %s (once; minutes for the full 5.x file)", csv, target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_SCHEMA)
        batch: list[tuple[str, str, str, float]] = []
        n = 0
        for rel, a, b, w in iter_assertions(csv):
            batch.append((a, b, rel, w))
            if len(batch) >= 50_000:
                conn.executemany("INSERT INTO edges VALUES (?, ?, ?, ?)", batch)
                n += len(batch)
                batch.clear()
                if on_progress:
                    on_progress(n)
        conn.executemany("INSERT INTO edges VALUES (?, ?, ?, ?)", batch)
        n += len(batch)
        if n == 0:
            raise ConvirError(
                f"{csv} has no English assertions in the ConceptNet 5 format "
                "(URI, relation, start, end, JSON info; tab-separated)"
            )
        conn.executescript(_INDEXES)
        conn.execute("INSERT INTO meta VALUES ('source', ?), ('edges', ?)", (str(csv), str(n)))
        conn.commit()
        conn.close()
        os.replace(tmp, target)
        log.warning("ConceptNet index ready: %d English edges", n)
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)
    return target


class ConceptNetRelation:
    """Related = an English ConceptNet edge (either direction) of weight >= ``min_weight``."""

    def __init__(self, csv: Path, min_weight: float = 1.0, index: Path | None = None) -> None:
        self.csv = Path(csv).expanduser()
        self.spec = f"conceptnet:{self.csv}"
        self.min_weight = float(min_weight)
        self.db_path = build_conceptnet_index(self.csv, index)
        self._conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)

    def related(self, term: str) -> dict[str, float]:
        rows = self._conn.execute(
            "SELECT b, MAX(weight) FROM edges WHERE a = ? AND weight >= ? GROUP BY b "
            "UNION ALL SELECT a, MAX(weight) FROM edges WHERE b = ? AND weight >= ? GROUP BY a",
            (term, self.min_weight, term, self.min_weight),
        ).fetchall()
        out: dict[str, float] = {}
        for other, w in rows:
            out[other] = max(out.get(other, 0.0), float(w))
        return out

    def neighbors(self, vocab: list[str]) -> dict[str, dict[str, float]]:
        known = set(vocab)
        return {t: {o: w for o, w in self.related(t).items() if o in known and o != t} for t in vocab}


class EmbeddingRelation:
    """Related = cosine of the two words' text embeddings in ``[min_sim, max_sim)``."""

    def __init__(self, encoder: str = "caption:minilm", min_sim: float = 0.5, max_sim: float = 0.9) -> None:
        self.encoder_spec = encoder
        self.spec = f"embedding:{encoder}"
        self.min_sim, self.max_sim = float(min_sim), float(max_sim)
        self._encoder: Any = None

    def neighbors(self, vocab: list[str], top: int = 30) -> dict[str, dict[str, float]]:
        if not vocab:
            return {}
        if self._encoder is None:
            from convir.encoders import load_encoder

            self._encoder = load_encoder(self.encoder_spec)
        vecs = np.asarray(self._encoder.encode_text(list(vocab), batch_size=256), dtype=np.float32)
        sims = vecs @ vecs.T
        np.fill_diagonal(sims, -1.0)
        out: dict[str, dict[str, float]] = {}
        for i, term in enumerate(vocab):
            row = sims[i]
            ok = np.flatnonzero((row >= self.min_sim) & (row < self.max_sim))
            ok = ok[np.argsort(-row[ok], kind="stable")][:top]
            out[term] = {vocab[j]: float(row[j]) for j in ok}
        return out


def load_relation(spec: str, min_score: float | None = None) -> Relation:
    """``conceptnet:PATH`` or ``embedding[:ENCODER]``; ``min_score``: the minimum ConceptNet
    weight (default 1.0) or cosine (default 0.5)."""
    kind, _, rest = (spec or "").strip().partition(":")
    if kind == "conceptnet":
        if not rest.strip():
            raise ConvirError("--kg conceptnet needs the assertions file: conceptnet:/path/assertions.csv.gz")
        return ConceptNetRelation(Path(rest.strip()), 1.0 if min_score is None else min_score)
    if kind == "embedding":
        return EmbeddingRelation(rest.strip() or "caption:minilm", 0.5 if min_score is None else min_score)
    raise ConvirError(
        f"unknown --kg {spec!r}; use one of:\n" + "\n".join(f"  {k}: {d}" for k, d in KINDS.items())
    )


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    first_entity: str
    second_entity: str
    weight: float


def find_pairs(
    entities: dict[str, Iterable[str]], firsts: list[str], relation: Relation, seed: int = 0
) -> dict[str, Pair]:
    """One second image per first image, drawn among the items whose caption has an entity
    related to one of the first's (and new to it), with a generator seeded by ``seed`` and
    the first's id: reproducible, and a first image keeps its pair when others are added.
    The pair records the strongest edge between the two. Items without a partner get none."""
    ents = {k: list(dict.fromkeys(v)) for k, v in entities.items()}
    vocab = sorted({e for v in ents.values() for e in v})
    nb = relation.neighbors(vocab)
    holders: dict[str, list[str]] = {}
    for item, heads in ents.items():
        for e in heads:
            holders.setdefault(e, []).append(item)
    out: dict[str, Pair] = {}
    for first in firsts:
        mine = set(ents.get(first, []))
        best: dict[str, tuple[float, str, str]] = {}
        for e1 in ents.get(first, []):
            for e2, w in nb.get(e1, {}).items():
                if e2 in mine:
                    continue
                for second in holders.get(e2, []):
                    if second != first and w > best.get(second, (-np.inf, "", ""))[0]:
                        best[second] = (w, e1, e2)
        if not best:
            continue
        digest = int(hashlib.sha256(first.encode("utf-8")).hexdigest()[:12], 16)
        rng = np.random.default_rng([seed, digest])
        candidates = sorted(best)
        second = candidates[int(rng.integers(len(candidates)))]
        w, e1, e2 = best[second]
        out[first] = Pair(first, second, e1, e2, float(w))
    return out
