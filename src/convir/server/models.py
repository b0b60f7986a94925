"""Request and response bodies of the HTTP API (pydantic; they also make the OpenAPI schema).

Inputs forbid unknown fields, bound every text and number, and are strict (``"k": true`` or
``"k": "5"`` is a 422, not 1 or 5; ``5.0`` is 5, as JSON Schema's ``integer`` says), so a
typo'd field, a wrong type or a megabyte of text is a clear 422, not a silent default or a
slow turn. Named components are enums of the registry's names, so the schema lists exactly
what is accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from convir.dialog.answers import ANSWER_MODES
from convir.specs import REGISTRY

MAX_TEXT = 1000  # one answer / detail (a long caption is ~30 words)
MAX_DESCRIPTION = 2000
MAX_ID = 512
MAX_OFFSET = 1_000_000  # far above any session count (max_sessions), far below SQLite's int64
MAX_VERSION = 1_000_000


def _names(*names: str) -> Any:
    """A ``Literal`` of the given names: the schema's enum is exactly what the server accepts."""
    return Literal[names]  # type: ignore[valid-type]


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``36.0`` (a number with a zero fraction): accept it
    as 36, so the server takes what its schema allows; ``36.5``, ``true`` and ``"36"`` stay 422."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# named components come from the registry (a plugin's strategy is accepted and listed too)
Strategy = _names(*REGISTRY.names("strategy"))
Questioner = _names(*REGISTRY.names("questioner"))
Imagination = _names(*REGISTRY.names("imagination"), "none", "off")
AnswerMode = _names(*ANSWER_MODES)
Integer = Annotated[int, BeforeValidator(_integral)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class SessionCreate(_In):
    """Start a conversation: the first description of the image, plus how to search."""

    description: str = Field(
        "",
        max_length=MAX_DESCRIPTION,
        examples=["a dog on a beach"],
        description="what is wanted; with `like`, how it should differ from that photo (may be empty)",
    )
    like: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_ID,
        description="start from this item (its id): the query fuses its vector with the words",
    )
    strategy: Strategy | None = Field(None, description="query strategy (GET /api/options describes each)")
    questioner: Questioner | None = Field(None, description="who asks the questions (GET /api/options)")
    answers: AnswerMode | None = Field(
        None, description="aware (yes/no answers re-weight the candidates) | text"
    )
    k: Integer | None = Field(None, ge=1, le=50, description="results shown per turn")
    imagine: Imagination | None = Field(None, description="imagination method (null, none or off = off)")
    generator: str | None = Field(None, max_length=200, description="image generator (server-allowed)")

    @model_validator(mode="after")
    def _something_to_search(self) -> SessionCreate:
        if not self.description.strip() and self.like is None:
            raise ValueError("give a description, or `like` (an item id) to start from")
        return self


class TurnIn(_In):
    """One user turn. ``answer`` answers the pending question, ``say`` adds a detail, ``skip``
    skips the question (never asked again), ``found`` marks ``item_id`` as the wanted image,
    ``choose`` answers an image-choice question with ``item_id`` (one of ``choices``; null =
    none of them), ``more`` / ``less`` ask for results like / unlike ``item_id``."""

    kind: Literal["answer", "say", "skip", "found", "choose", "more", "less"]
    text: str | None = Field(None, max_length=MAX_TEXT)
    item_id: str | None = Field(None, max_length=MAX_ID)
    image_feedback: str | None = Field(
        None, max_length=MAX_TEXT, description="how the generated images differ from the target"
    )
    version: Integer | None = Field(
        None,
        ge=1,
        le=MAX_VERSION,
        description="apply only if the session is still at this version (else 409)",
    )


class ResultItem(BaseModel):
    rank: int
    id: str
    score: float | None
    caption: str
    captions: list[str]
    generated: dict[str, str] | None = Field(
        None,
        description="the caption made by `convir index --captioner` ({caption, captioner}); `caption` "
        "shows it when the item has no caption of its own",
    )
    thumbnail: str | None = Field(description="URL of a JPEG thumbnail; null when the item has no image")
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="stored metadata: a manifest's, and a photo's taken/gps/place/camera/size",
    )
    duplicate_of: str | None = Field(
        default=None,
        description="id of a higher-ranked result this one nearly duplicates (convir duplicates)",
    )


class GeneratedImage(BaseModel):
    url: str | None = Field(description="null for a text-only generator (the prompt is the 'image')")
    prompt: str


class HistoryTurn(BaseModel):
    turn: int
    question: str | None
    text: str = Field(description="the description (turn 0), the answer, or the added detail")
    query: str | None
    top: list[str] = Field(description="ids shown after this turn")


class Options(BaseModel):
    strategy: str
    questioner: str
    k: int
    llm: str | None
    imagine: str | None = None
    generator: str | None = None
    answers: str = "aware"


class ChoiceOption(BaseModel):
    number: int
    id: str
    caption: str
    thumbnail: str | None


class SessionView(BaseModel):
    id: str
    version: int
    status: Literal["open", "found"]
    created: float
    updated: float
    options: Options
    description: str
    turn: int = Field(description="number of user turns after the description")
    query: str | None
    question: str | None
    choices: list[ChoiceOption] = Field(
        default_factory=list,
        description="an image-choice question's options (answer with kind 'choose'); [] otherwise",
    )
    image_question: str | None
    results: list[ResultItem]
    images: list[GeneratedImage]
    history: list[HistoryTurn]
    found: str | None
    timings: dict[str, float]
    notice: str | None = Field(
        None,
        description="set when the last turn ran without the LLM because its LLM time budget was "
        "spent (the model busy with other sessions); says what was used instead",
    )


class SessionCreated(SessionView):
    secret: str = Field(
        description="the owner secret: send it back as the X-Session-Secret header to read, continue, "
        "list or delete this session (browsers get it as an HttpOnly cookie instead); it is "
        "shown only here and the server keeps only its hash"
    )


class SessionSummary(BaseModel):
    id: str
    version: int
    status: str
    description: str
    turn: int
    updated: float


class SessionList(BaseModel):
    sessions: list[SessionSummary] = Field(description="the caller's sessions only")
    total: int = Field(description="how many sessions the caller owns")


class SearchOut(BaseModel):
    query: str
    mode: str
    took_ms: float
    results: list[ResultItem]


class Health(BaseModel):
    status: Literal["ok"]
    items: int
    sessions: int


class Version(BaseModel):
    convir: str
    api: int
    encoder: str
    items: int
    llm: str | None


class ServerOptions(BaseModel):
    """What a client may choose when it creates a session (and the server's defaults)."""

    strategies: dict[str, str]
    questioners: dict[str, str]
    defaults: Options
    llm: str | None
    imagination: list[str] = Field(description="imagination methods; empty when unavailable")
    generators: list[str]
    limits: dict[str, int]
    needs_llm: dict[str, list[str]] = Field(
        default_factory=dict, description="strategies / questioners that need the server to have an LLM"
    )


class ErrorOut(BaseModel):
    error: str
    detail: str
