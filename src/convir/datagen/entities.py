"""Entity sets of captions, dialogues and queries, with spaCy.

ReCQR compares the entities a dialogue already mentioned (E_D) with those of the target
query (E_T): their overlap is what the elliptical query may leave out. Two extractors:

* ``spacy:NAME`` — a trained English pipeline (``en_core_web_sm`` or any installed
  pipeline name/path): the lemma of every noun chunk's root plus named entities. spaCy's
  English models are published by Explosion on GitHub, not on PyPI; install one with
  ``python -m spacy download en_core_web_sm``.
* ``rules`` — offline fallback on ``spacy.blank("en")`` (tokenizer and stop words only, no
  trained weights): a noun-phrase heuristic. A phrase is a run of alphabetic tokens that
  are neither stop words nor verb forms (``-ing``/``-ed``); its last token is the head, and
  heads are singularised. It misses adjective-noun ambiguity a tagger resolves ("a
  black and white cat" yields "cat" and "black"-less heads only) but needs no model.

``auto`` (the default) uses ``en_core_web_sm`` when it is installed, else ``rules``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from convir.errors import ConvirError

log = logging.getLogger("convir")

INSTALL_HINT = (
    "install an English spaCy pipeline with `python -m spacy download en_core_web_sm` "
    "(spaCy's models come from its GitHub releases, not PyPI)"
)
KINDS = {
    "auto": "en_core_web_sm when installed, else the rules fallback",
    "spacy": "spacy:NAME_OR_PATH, a trained pipeline such as spacy:en_core_web_sm",
    "rules": "offline fallback: spacy.blank('en') + a noun-phrase heuristic",
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Heads that are words about the search itself, not things in a photo.
GENERIC = _words(
    """photo photos picture pictures image images pic pics shot shots kind kinds type types lot lots
    thing things something anything idea ideas detail details look one ones way please thanks thank
    hi hello sure great nice okay ok yes yeah maybe want wants wanted need needs like likes find
    love think looking search help system user assistant favourite favorite lovely good cool fun
    different similar another else instead also just really bit sort version style right let"""
)
# -ing / -ed words that are nouns (the verb-form rule would otherwise cut them out).
NOUN_ING_ED = _words(
    """building buildings ceiling ceilings clothing painting paintings evening morning ring rings
    king kings thing things wing wings string swing swings sibling siblings railing railings
    frosting icing topping toppings stuffing pudding parking landing crossing sign wedding
    bed beds shed sled seed seeds reed weed speed steed sled feed"""
)
# Frequent caption verbs without an -ing/-ed ending ("a woman stands", "a dog holds").
VERBS = _words(
    """stand stands sit sits hold holds look looks lie lies lay lays walk walks ride rides eat eats
    play plays wait waits fly flies run runs jump jumps hang hangs wear wears carry carries throw
    throws watch watches take takes sleep sleeps swim swims drive drives drink drinks pose poses
    lean leans rest rests grow grows cross crosses contain contains feature features"""
)
ADJECTIVES = _words(
    """red blue green yellow black white brown grey gray orange pink purple silver golden gold
    big small large little tall short long old young new wooden metal empty full open closed
    sunny cloudy rainy snowy grassy sandy dark bright colorful colourful many several few"""
)
IRREGULAR = {
    "men": "man",
    "women": "woman",
    "people": "person",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
    "knives": "knife",
    "leaves": "leaf",
    "shelves": "shelf",
    "wolves": "wolf",
    "sheep": "sheep",
    "fish": "fish",
    "glasses": "glasses",
    "scissors": "scissors",
    "skis": "ski",
    "buses": "bus",
    "boxes": "box",
    "dishes": "dish",
    "benches": "bench",
    "sandwiches": "sandwich",
    "giraffes": "giraffe",
}


def singular(word: str) -> str:
    """Naive English singular for the fallback (a trained pipeline lemmatises instead)."""
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


@dataclass(frozen=True)
class Entities:
    """Heads (what is compared) and the phrases they came from (for humans and KG lookups)."""

    heads: tuple[str, ...]
    phrases: tuple[str, ...]


class SpacyEntities:
    """Entity extraction with spaCy; ``kind`` says which extractor (recorded with the data)."""

    def __init__(self, nlp: Any, kind: str) -> None:
        self.nlp = nlp
        self.kind = kind
        self.trained = kind != "rules"

    def __call__(self, text: str) -> Entities:
        return self.from_doc(self.nlp(text or ""))

    def from_doc(self, doc: Any) -> Entities:
        return _trained(doc) if self.trained else _rules(doc)


def _add(heads: list[str], phrases: list[str], head: str, phrase: str) -> None:
    head, phrase = head.lower().strip(), " ".join(phrase.lower().split())
    if len(head) < 2 or head in GENERIC or head in ADJECTIVES or not re.search(r"[a-z]", head):
        return
    if head not in heads:
        heads.append(head)
        phrases.append(phrase)


def _trained(doc: Any) -> Entities:
    heads: list[str] = []
    phrases: list[str] = []
    for chunk in doc.noun_chunks:
        root = chunk.root
        if root.pos_ in ("NOUN", "PROPN"):
            words = [t.text for t in chunk if not t.is_stop and t.is_alpha]
            _add(heads, phrases, root.lemma_ or root.text, " ".join(words) or root.text)
    for ent in doc.ents:
        _add(heads, phrases, ent.text, ent.text)
    return Entities(tuple(heads), tuple(phrases))


def _verbal(token: Any) -> bool:
    w = token.lower_
    if w in VERBS:
        return True
    return w not in NOUN_ING_ED and (
        (len(w) > 5 and w.endswith("ing")) or (len(w) > 4 and w.endswith("ed") and not w.endswith("eed"))
    )


def _rules(doc: Any) -> Entities:
    heads: list[str] = []
    phrases: list[str] = []
    run: list[Any] = []

    def flush() -> None:
        words = [t for t in run if t.lower_ not in GENERIC]
        if words:
            _add(heads, phrases, singular(words[-1].text), " ".join(t.text for t in words))
        run.clear()

    for token in doc:
        if token.is_alpha and not token.is_stop and not _verbal(token) and len(token.text) > 1:
            run.append(token)
        else:
            flush()
    flush()
    return Entities(tuple(heads), tuple(phrases))


def load_entities(spec: str = "auto") -> SpacyEntities:
    """The extractor named by ``spec`` (see :data:`KINDS`); ``auto`` logs which one it chose."""
    try:
        import spacy
    except ImportError as exc:
        raise ConvirError("convir datagen needs spaCy: pip install 'convir[datagen]'") from exc
    spec = (spec or "auto").strip()
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ConvirError(f"unknown --entities {spec!r}; use one of: auto, spacy:NAME, rules")
    if kind == "rules":
        return SpacyEntities(spacy.blank("en"), "rules")
    name = rest.strip() or "en_core_web_sm"
    try:
        nlp = spacy.load(name, disable=["textcat"])
    except OSError as exc:
        if kind == "spacy":
            raise ConvirError(f"spaCy pipeline {name!r} is not installed: {INSTALL_HINT}") from exc
        log.warning(
            "spaCy's English pipeline en_core_web_sm is not installed: using the rule-based "
            "fallback (spacy.blank + noun-phrase heuristic); for better entities, %s",
            INSTALL_HINT,
        )
        return SpacyEntities(spacy.blank("en"), "rules")
    if not nlp.has_pipe("parser"):
        raise ConvirError(f"spaCy pipeline {name!r} has no parser: noun chunks need one (en_core_web_sm has)")
    return SpacyEntities(nlp, f"spacy:{name}")
