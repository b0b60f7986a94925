"""Reading what a person types as an answer: polarity, negated phrases and new facts.

People do not answer "yes" / "no" / "unknown". They type "idk", "i dont think so", "no, it's
blue", "yes, and it is sunny", "a red bike, not on a road". :func:`read` turns one answer (and
the question it answers) into a :class:`Reading`:

* ``polarity``: ``yes`` / ``no`` / ``unknown`` for a yes/no question, ``text`` for a free-text
  answer (an open question, volunteered text), ``unknown`` for "I don't know" in any form;
* ``negated``: what the answer says is *not* in the photo ("not on a road" -> "road", "without
  snow" -> "snow", "no people" -> "people");
* ``facts``: the rest of what it says that the question did not already say ("no, it's blue" ->
  "blue"; "yes, and it is sunny" -> "sunny").

How (no model: a person's answer is short and its form is closed-class):

1. normalise contractions ("isn't", "isnt" -> "is not", "idk" stays a token);
2. consume *leads*, the answer's opening cue phrases (a closed list per polarity, longest
   first; "yes definitely", "not sure, maybe" are two leads). A leading "no" followed by a
   content word is a determiner ("no people"), not the answer word;
3. find negation cues ("not", "no", "without", "never", "nor", "n't") and their scope, as
   NegEx does (Chapman et al. 2001): after the cue, skip function words and light verbs
   ("not on a road", "isn't wearing a hat"), then take the content words up to the next
   function word or punctuation (at most three); "or" / "nor" continue the scope
   ("no cars or people");
4. the words left, split at punctuation and conjunctions, are the facts; a fragment whose
   content stems the question already has ("Is the car red? yes, it's red") adds nothing;
5. a yes/no question without a lead is answered by what the rest says: a negated phrase about
   the question's attribute ("the dog is not black") is a "no"; a fact that contradicts it
   (another colour, number, time of day: "Is the car red? it's blue") is a correction, "no";
   the attribute itself ("a dog") is a "yes"; anything else is ``text``.

Accuracy on the hand-written set tests/dialog/data/answer_readings.jsonl is checked by
tests/dialog/test_reading.py (docs/conversation.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from convir.text import content_stems, content_words

POLARITIES = ("yes", "no", "unknown", "text")


@dataclass(frozen=True)
class Reading:
    """What one answer says (see the module docstring)."""

    polarity: str  # yes | no | unknown | text
    negated: tuple[str, ...] = ()  # phrases the answer says are absent
    facts: tuple[str, ...] = ()  # new things it says, as short fragments ("it is sunny" -> "sunny")
    correction: bool = False  # a "no" read from a contradicting fact ("Is it red?" -> "blue")

    @property
    def fact_text(self) -> str:
        """The facts as one line of query text ("" when none)."""
        return ", ".join(self.facts)


# -- normalisation ---------------------------------------------------------------------------------
_CONTRACTIONS = [
    (r"\bcan'?t\b|\bcannot\b", "can not"),
    (r"\bwon'?t\b", "will not"),
    (r"\bain'?t\b", "is not"),
    (
        r"\b(do|does|did|is|are|was|were|has|have|had|could|would|should|must|need)n'?t\b",
        r"\1 not",
    ),
    (r"\b(it|there|that|he|she|what|here|who)'s\b", r"\1 is"),
    (r"\bi'?m\b", "i am"),
    (r"\b(they|we|you)'re\b", r"\1 are"),
    (r"\b(i|we|you|they)'ve\b", r"\1 have"),
    (r"\b(i|we|you|they|he|she|it)'ll\b", r"\1 will"),
    (r"\b(i|we|you|they|he|she|it)'d\b", r"\1 would"),
    (r"\bno[ -]one\b|\bnoone\b", "nobody"),
    (r"'s\b", ""),
]
_TOKEN = re.compile(r"[^\W_]+|[,;.!?:]")
_PUNCT = frozenset(",;.!?:")


def tokens(text: str) -> list[str]:
    """Lower-cased words and clause punctuation, contractions expanded."""
    s = (text or "").lower().replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    for pat, rep in _CONTRACTIONS:
        s = re.sub(pat, rep, s)
    return _TOKEN.findall(s)


# -- leads: the answer's opening cue phrases ---------------------------------------------------------
_SUBJ = r"(?:it|he|she|they|you|there|that|i|we|this|these|those)"
_AUX = r"(?:is|are|was|were|does|do|did|has|have|had|can|could|will|would|should|am)"
_END = r"(?=\s*(?:[,;.!?:]|$))"
_UNKNOWN_LEADS = [
    r"yes and no",
    r"(?:i )?(?:do not|did not) (?:know|remember|recall)",
    r"(?:i )?(?:can not|could not) (?:tell|say|remember|recall|see it clearly|see it well|see well|be sure)",
    r"(?:i am |i m )?(?:not |un)sure(?: about that)?",
    r"(?:i am |i m )?not (?:certain|positive)",
    r"(?:i )?(?:have not|has not) (?:a|any|the slightest) (?:clue|idea)",
    r"idk|dunno|i dunno|unknown|unclear|no idea|no clue|not a clue|who knows|god knows",
    r"hard to (?:say|tell)|difficult to (?:say|tell)|can not be sure",
    r"maybe|perhaps|possibly|might be|could be",
    r"kind of|sort of|kinda|sorta|partly|partially|somewhat",
    r"not that i (?:remember|recall|know)",
    r"not all(?: of them)?",
    r"pass|skip|never ?mind|no comment|nm",
    r"tbh|honestly|sorry|hmm+|um+|uh+|well|ok|okay",
]
_NO_LEADS = [
    r"(?:absolutely|definitely|certainly|probably|surely|of course) not",
    r"not (?:at all|really|quite|exactly|much|that i can see|as far as i can see)",
    r"i (?:do not|don t) (?:think|believe) so|i think not|i guess not|i doubt it",
    r"(?:i )?can not see (?:any|anything|one|it|them)(?: at all)?",
    r"nothing like that|no way|none(?: of them| at all)?|nothing|never|nope|nah|negative|wrong|incorrect",
    _SUBJ + r" " + _AUX + r" not" + _END,
]
_YES_LEADS = [
    r"ye+s*|yes+ please|yea+h*|yah|ya+|yep+|yup+|aye|y",
    r"of course|definitely|absolutely|certainly|indeed|correct|exactly|true|affirmative|sure",
    r"(?:that is|you are|thats) (?:right|correct)|right",
    r"i (?:think|believe|guess) so|probably|likely|most likely|mostly",
    r"a little|a bit|a few|some(?: of them)?",
    _SUBJ + r" " + _AUX + _END,
]


def _compile(alts: list[str]) -> re.Pattern[str]:
    return re.compile(r"^(?:" + "|".join(f"(?:{a})" for a in alts) + r")\b\s*")


_LEADS = [
    ("unknown", _compile(_UNKNOWN_LEADS)),
    ("no", _compile(_NO_LEADS)),
    ("yes", _compile(_YES_LEADS)),
]
_BARE_NO = re.compile(r"^(?:no|n)\b\s*")
_TRAILING = re.compile(r"\s*[,;.!?:]*\s*\b(yes|yeah|yep|yup|no|nope)\s*[,;.!?:]*\s*$")
_IF_CLAUSE = re.compile(r"^(?:if|whether|about)\b[^,;.!?:]*")
_FILLER_LEAD = {"tbh", "honestly", "sorry", "hmm", "um", "uh", "well", "ok", "okay"}


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# -- negation --------------------------------------------------------------------------------------
_CUES = frozenset(["not", "no", "without", "never", "nor", "neither", "nobody"])
_IMPLIED = {"nobody": "people"}  # a cue that names what is absent
# skipped after a cue before the negated phrase: "not on a road", "isn't wearing a hat"
_LIGHT = _wordset(
    "wearing wear wears holding hold holds having have has carrying carry carries containing contain "
    "contains showing show shows see seeing visible anymore"
)
_CONTINUE = frozenset(["or", "nor"])
_STOP_SCOPE = _PUNCT | _CONTINUE
_DETERMINERS = frozenset(["a", "an", "the", "any", "some"])
_MAX_SCOPE = 3
_PRONOUNS = frozenset(["one", "ones"])
# not facts: hedges and discourse words ("idk tbh", "a street with hardly any cars")
_FILLER = _wordset(
    "tbh sorry honestly lol ok okay well hmm um uh actually basically really just think guess "
    "probably maybe hardly barely quite pretty thanks please yes yeah yep yup no nope sure "
    "definitely absolutely remember know"
)
_SPLIT = frozenset(["and", "but", "also", "too", "only", "just", "though", "although", "plus", "then"])
# words of one kind: a fact with another word of the same kind than the question's contradicts it
_KINDS = [
    _wordset(
        "red blue green yellow white black brown grey gray orange pink purple silver gold beige "
        "tan dark light"
    ),
    _wordset("one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 10 many"),
    _wordset("day daytime night nighttime evening morning dusk dawn sunset"),
    _wordset("indoors inside indoor outdoors outside outdoor"),
    _wordset("sunny cloudy rainy raining snowy snowing foggy overcast clear"),
    _wordset("wooden wood glass metal metallic plastic stone concrete brick leather paper"),
]


def _is_content(tok: str) -> bool:
    return tok not in _PUNCT and bool(content_words(tok)) and tok not in _FILLER


def _leads(s: str) -> tuple[list[str], str]:
    """The lead polarities at the start of ``s`` (normalised) and what follows them."""
    found: list[str] = []
    while True:
        s = s.lstrip(" ,;.!?:")
        if not s:
            return found, s
        m = _BARE_NO.match(s)
        if m:
            nxt = s[m.end() :].split(" ", 1)[0]
            if nxt and _is_content(nxt) and nxt not in ("way", "idea", "clue", "comment"):
                return found, s  # "no people": a determiner, read as a negation below
        for polarity, pat in _LEADS:
            m = pat.match(s)
            if m and m.end() > 0:
                word = m.group(0).strip()
                if polarity == "unknown" and word.split()[0] in _FILLER_LEAD:
                    found.append("filler")
                else:
                    found.append(polarity)
                s = s[m.end() :]
                if polarity == "unknown":
                    s = _IF_CLAUSE.sub("", s.lstrip())  # "not sure if there is a dog": the question again
                break
        else:
            m = _BARE_NO.match(s)
            if m:
                found.append("no")
                s = s[m.end() :]
                continue
            return found, s


def _scope(toks: list[str], i: int) -> tuple[int, list[str]]:
    """The negated phrases of the cue at ``toks[i]`` and the index just past its scope."""
    if toks[i] in _IMPLIED:  # "nobody on the beach": the cue names what is absent
        return i + 1, [_IMPLIED[toks[i]]]
    phrases: list[str] = []
    i += 1
    while True:
        while i < len(toks) and toks[i] not in _STOP_SCOPE and not _is_content(toks[i]):
            i += 1  # function words: "not on a road"
        while i < len(toks) and toks[i] in _LIGHT:
            i += 1  # light verbs: "isn't wearing a hat"
        while i < len(toks) and toks[i] in _DETERMINERS:
            i += 1
        phrase: list[str] = []
        while i < len(toks) and len(phrase) < _MAX_SCOPE and _is_content(toks[i]) and toks[i] not in _CUES:
            phrase.append(toks[i])
            i += 1
        if phrase:
            phrases.append(" ".join(phrase))
        if i + 1 < len(toks) and toks[i] in _CONTINUE and toks[i + 1] not in _CUES:
            i += 1  # "no cars or people"
            continue
        return i, phrases


def _scan(toks: list[str]) -> tuple[list[str], list[list[str]]]:
    """Negated phrases and the fact fragments left around their scopes."""
    negated: list[str] = []
    fragments: list[list[str]] = [[]]
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in _CUES:
            i, phrases = _scope(toks, i)
            negated += phrases
            fragments.append([])
            continue
        if t in _PUNCT or t in _SPLIT:
            fragments.append([])
        else:
            fragments[-1].append(t)
        i += 1
    return negated, [f for f in fragments if f]


def _kind_match(said: frozenset[str], question: frozenset[str]) -> str | None:
    """ "no" when the answer names another member of a kind the question asks about ("Is it
    red?" -> "blue"), "yes" when it names the asked one ("red and white"), else None."""
    verdict = None
    for kind in _KINDS:
        asked = {w for w in question if w in kind}
        named = {w for w in said if w in kind}
        if asked and named:
            if not asked & named:
                return "no"
            verdict = "yes"
    return verdict


def _words(text: str) -> frozenset[str]:
    return frozenset(tokens(text))


_QUESTION_AUX = re.compile(
    r"^\W*(?:so|and|also|ok|okay|then|now|well|but)?[,\s]*"
    r"(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b",
    re.I,
)


def is_yes_no_question(question: str | None) -> bool:
    """Starts with an auxiliary verb and is not an alternative question ("Is it indoors or
    outdoors?" is answered by naming one, so "yes" / "no" says nothing about either)."""
    return bool(question and _QUESTION_AUX.match(question) and not re.search(r"\bor\b", question, re.I))


def read(answer: str, question: str | None = None, *, volunteered: bool = False) -> Reading:
    """Read one answer; ``question`` is what it answers (None: unknown, read as a yes/no
    answer), ``volunteered``: text the user offered without a question (polarity ``text``)."""
    toks = tokens(answer)
    if not any(t not in _PUNCT for t in toks):
        return Reading("unknown")
    leads, rest = _leads(" ".join(toks))
    polarity_words = [p for p in leads if p != "filler"]
    lead = polarity_words[0] if polarity_words else None
    if lead is None:
        m = _TRAILING.search(rest)
        if m and m.start() > 0:  # "a boat yes"
            lead = "yes" if m.group(1).startswith("y") else "no"
            rest = rest[: m.start()]
    negated, fragments = _scan(rest.split())
    about_it = any(p in _PRONOUNS for p in negated)  # "i don't see one": the attribute asked about
    negated = [p for p in negated if p not in _PRONOUNS]
    fragments = [f for f in fragments if [w for w in f if _is_content(w)] != ["one"]]  # "there is one"
    q_stems = content_stems(question or "")
    facts: list[str] = []
    for frag in fragments:
        words = [w for w in frag if w not in _FILLER]
        stems = content_stems(" ".join(words))
        if stems and not stems <= q_stems:
            while words and not _is_content(words[0]):  # "it is sunny" -> "sunny"
                words = words[1:]
            facts.append(" ".join(words))
    found = (tuple(negated), tuple(facts))
    said_nothing = not facts and not negated
    if volunteered:  # "idk" on its own says nothing; anything else is a detail
        return Reading("unknown" if said_nothing and lead in ("unknown", None) else "text", *found)
    if question is not None and not is_yes_no_question(question):
        if lead == "unknown":
            return Reading("unknown", *found)
        return Reading("text", *found)
    if lead is not None:
        return Reading(lead, *found)
    if (
        about_it
        or any(content_stems(p) & q_stems for p in negated)
        or (negated and not facts and not q_stems)
    ):
        return Reading("no", *found)
    said = frozenset(w for f in fragments for w in f)  # outside the negations: "not at night"
    kind = _kind_match(said, _words(question or "")) if q_stems else None
    if kind == "no":
        return Reading("no", *found, correction=True)
    if kind == "yes":
        return Reading("yes", *found)
    if said_nothing and content_stems(rest) and content_stems(rest) <= q_stems:
        return Reading("yes")  # "a dog" to "Is there a dog?"
    if said_nothing and not content_stems(rest):
        return Reading("unknown")
    return Reading("text", *found)


def strip_negations(text: str) -> str:
    """``text`` without its negation cues and their scopes ("a dog, not a cat" -> "a dog")."""
    toks = tokens(text)
    negated, _ = _scan(toks)
    if not negated:
        return text.strip()
    out: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i] in _CUES:
            i, _ = _scope(toks, i)
            continue
        out.append(toks[i])
        i += 1
    s = re.sub(r"\s+([,;.!?:])", r"\1", " ".join(out))
    s = re.sub(r"([,;:])(\s*[,;:.!?])+", r"\1", s)
    return s.strip(" ,;:.")
