"""Word-level text rules shared by the simulated user, the answer reader and the questioners.

One definition of a caption's *content stems* (lower-cased words, English stop words aside,
Snowball-stemmed), so "the simulated user's captions support this answer", "this candidate has
this attribute" and "this answer is about that attribute" are decided by the same rule.
Numbers and spatial words are kept (``two``, ``behind`` and ``front`` are facts about a photo);
words that describe the picture rather than its content (``photo``, ``image``) are dropped.
"""

from __future__ import annotations

import re
from functools import lru_cache

_NUMBERS = frozenset(
    [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "fifteen",
        "twenty",
        "hundred",
    ]
)
_SPATIAL = frozenset(["front", "back", "top", "bottom", "side", "behind", "empty", "full", "fire"])
_GENERIC = frozenset(["photo", "picture", "image", "shown", "visible", "there", "pic", "photograph"])


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset((ENGLISH_STOP_WORDS - _NUMBERS - _SPATIAL) | _GENERIC)


@lru_cache(maxsize=1)
def _stemmer() -> object:
    import Stemmer

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens."""
    return re.findall(r"[a-z0-9]+", text.lower())


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry content (stop words and picture words aside), in order."""
    stop = _stopwords()
    return [w for w in words(text) if w not in stop]


@lru_cache(maxsize=200_000)
def content_stems(text: str) -> frozenset[str]:
    """Stemmed content words of ``text`` (cached: gallery captions are read many times)."""
    return frozenset(_stemmer().stemWords(content_words(text)))  # type: ignore[attr-defined]


@lru_cache(maxsize=1)
def _yake() -> object:
    import yake

    # n <= 2: "red sail", "wave"; dedup keeps "sailboat" and "sail boat" from both appearing
    return yake.KeywordExtractor(lan="en", n=2, top=8, dedupLim=0.8)


@lru_cache(maxsize=100_000)
def keyphrases(text: str) -> tuple[str, ...]:
    """YAKE keyphrases (1-2 words) of ``text``, best first, each with at least one content word
    (YAKE, as Mario uses it: unsupervised, per-document, no model to download)."""
    if not text.strip():
        return ()
    out = []
    for phrase, _score in _yake().extract_keywords(text):  # type: ignore[attr-defined]
        phrase = " ".join(words(phrase))
        if phrase and content_words(phrase):
            out.append(phrase)
    return tuple(out)
