"""One place that builds a conversation: :class:`SessionSpec` + :func:`build_conversation`.

`convir chat`, the HTTP service and `convir eval dialog` describe a session with the same
typed spec and get their :class:`~convir.dialog.engine.Conversation` from the same function,
so defaults (which questioner without an LLM, which re-ranker), the needs-an-LLM rule, the
number of results a turn shows and the lifetime of each part are decided here once:

* models (encoders, LLMs, VLMs, generators, cross-encoders) are loaded once per process by
  the component registry (:mod:`convir.specs`) and shared;
* strategies, questioners and the imagination stage are built per conversation, so nothing
  one session does (a generator that failed and switched imagination off) leaks into
  another; that switch is saved in the state and restored with it.

:meth:`SessionSpec.validate` checks every name and option without loading anything, so a
typo fails in milliseconds, before any model loads. The spec round-trips to JSON: chat saves
it in the session file, the service in its sessions table, eval in the run folder's config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from convir.dialog.defaults import PROMPT_TURNS
from convir.dialog.reference import REFERENCE_WEIGHT
from convir.errors import ConvirError
from convir.specs import REGISTRY, NeedsLLMError

# the questioner without an LLM, on every kind of index (captions or none: dialog.attributes)
DEFAULT_QUESTIONER = "infogain-open"


@dataclass(frozen=True)
class SessionSpec:
    strategy: str = "concat"
    questioner: str | None = None  # default: plain with an LLM, infogain-open without
    reranker: str | None = None  # --strategy rerank only; default llm
    llm: str | None = None
    mode: str = "dense"  # first-stage ranking of concat / rewrite: dense | bm25 | hybrid
    answers: str = "aware"  # aware: read yes/no answers into a posterior | text: answers are query text
    answerer: str | None = None  # simulated user (eval): captions | vlm; None = a person answers
    vlm: str | None = None  # --answerer vlm
    imagine: str | None = None  # dar | refiner
    generator: str | None = None  # default text: when imagine is set
    generator_options: dict[str, Any] = field(default_factory=dict)
    images_per_turn: int | None = None
    dar_schedule: str | None = None
    dar_fusion: str | None = None
    k: int = 10  # results a turn shows (the refiner shows at least 7 + 3)
    depth: int = 100  # how deep each turn ranks (the target's rank is exact up to here)
    # exchanges an LLM prompt shows besides the description (0 = all): bounds every call's time
    prompt_turns: int = PROMPT_TURNS
    # weight of the reference photo (--like / --image) in the fused query (convir.dialog.reference)
    reference_weight: float = REFERENCE_WEIGHT

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionSpec:
        """From JSON (a saved session, a request, a run config); unknown keys are an error so a
        misspelt setting is never silently dropped."""
        if not isinstance(data, dict):
            raise ConvirError("a session spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConvirError(
                f"unknown session setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    # -- defaults and checks ------------------------------------------------------------------
    @property
    def has_llm(self) -> bool:
        return bool(self.llm and self.llm.strip())

    def resolved(self, have_llm: bool | None = None) -> SessionSpec:
        """The spec with every default filled in (what is recorded and compared)."""
        llm = self.has_llm if have_llm is None else have_llm
        # without an LLM: the best measured LLM-free questioner (docs/benchmarks.md, issue 29)
        questioner = self.questioner or ("plain" if llm else DEFAULT_QUESTIONER)
        reranker = (self.reranker or "llm") if self.strategy == "rerank" else self.reranker
        changes: dict[str, Any] = {"questioner": questioner, "reranker": reranker}
        if self.imagine in (None, "", "none", "off"):
            changes |= {
                "imagine": None,
                "generator": None,
                "generator_options": {},
                "images_per_turn": None,
                "dar_schedule": None,
                "dar_fusion": None,
            }
        else:
            from convir.imagine import DEFAULT_IMAGES_PER_TURN

            changes["generator"] = (self.generator or "").strip() or "text:"
            changes["images_per_turn"] = self.images_per_turn or DEFAULT_IMAGES_PER_TURN.get(self.imagine, 1)
            if self.imagine == "dar":
                changes["dar_schedule"] = self.dar_schedule or "0.7/0.3,0.7/0.3,0.5/0.5"
                changes["dar_fusion"] = self.dar_fusion or "query"
        return replace(self, **changes)

    def validate(self, have_llm: bool | None = None) -> SessionSpec:
        """The resolved spec, after checking every name, option and the needs-an-LLM rule; no
        model is loaded. ``have_llm``: an LLM object is supplied by the caller (the service)."""
        from convir.index.ranker import MODES

        spec = self.resolved(have_llm)
        llm = spec.has_llm if have_llm is None else have_llm
        if spec.llm:
            REGISTRY.parse("llm", spec.llm)
        REGISTRY.parse("strategy", spec.strategy)
        REGISTRY.require_llm("strategy", spec.strategy, llm)
        REGISTRY.require_llm("questioner", spec.questioner, llm)
        if spec.reranker is not None:
            if spec.strategy != "rerank":
                raise ConvirError(
                    f"--reranker {spec.reranker} only applies to --strategy rerank (not {spec.strategy!r})"
                )
            comp, _ = REGISTRY.parse("reranker", spec.reranker)
            if comp.needs_llm and not llm:
                raise NeedsLLMError(
                    f"strategy 'rerank' with --reranker {spec.reranker} needs an LLM: pass --llm "
                    "(e.g. llamacpp:smollm2), or use --reranker cross:MODEL"
                )
        from convir.dialog.answers import ANSWER_MODES

        if spec.answers not in ANSWER_MODES:
            raise ConvirError(f"unknown --answers {spec.answers!r}; choose one of: {', '.join(ANSWER_MODES)}")
        if spec.mode not in MODES:
            raise ConvirError(f"unknown mode {spec.mode!r} (--mode); choose one of: {', '.join(MODES)}")
        if spec.answerer is not None:
            REGISTRY.parse("answerer", spec.answerer)
            REGISTRY.require_llm("answerer", spec.answerer, llm)
            if spec.answerer == "vlm" and not spec.vlm:
                raise ConvirError(
                    "--answerer vlm needs --vlm SPEC (hf:MODEL_ID_OR_PATH or openai:BASE_URL#MODEL)"
                )
        if spec.vlm:
            if spec.answerer != "vlm":
                raise ConvirError("--vlm is only used by --answerer vlm")
            REGISTRY.parse("vlm", spec.vlm)
        if isinstance(spec.k, bool) or not isinstance(spec.k, int) or spec.k < 1:
            raise ConvirError(f"k (results per turn) must be a whole number >= 1, not {spec.k!r}")
        if isinstance(spec.depth, bool) or not isinstance(spec.depth, int) or spec.depth < 1:
            raise ConvirError(f"depth must be a whole number >= 1, not {spec.depth!r}")
        pt = spec.prompt_turns
        if isinstance(pt, bool) or not isinstance(pt, int) or pt < 0:
            raise ConvirError(f"--prompt-turns must be a whole number >= 0 (0 = all), not {pt!r}")
        rw = spec.reference_weight
        if isinstance(rw, bool) or not isinstance(rw, (int, float)) or not 0 <= rw <= 1:
            raise ConvirError(f"--like-weight must be a number from 0 to 1, not {rw!r}")
        spec.imagination_settings()  # checks method, generator spec, options and schedule
        return spec

    def imagination_settings(self) -> dict[str, Any] | None:
        """Validated imagination settings as recorded in run configs (see
        :func:`convir.imagine.options.imagine_settings`); None when imagination is off."""
        spec = self.resolved()
        if spec.imagine is None:
            return None
        from convir.imagine.options import imagine_settings

        return imagine_settings(
            spec.imagine,
            spec.generator,
            [f"{k}={v}" for k, v in spec.generator_options.items()],
            spec.images_per_turn,
            spec.dar_schedule,
            spec.dar_fusion or "query",
        )

    @classmethod
    def with_imagination(cls, settings: dict[str, Any] | None, **values: Any) -> SessionSpec:
        """A spec from the CLI's imagination settings dict (``imagine_settings``) plus fields."""
        extra: dict[str, Any] = {}
        if settings:
            extra = {
                "imagine": settings["imagine"],
                "generator": settings.get("generator"),
                "generator_options": dict(settings.get("generator_options") or {}),
                "images_per_turn": settings.get("images_per_turn"),
                "dar_schedule": settings.get("dar_schedule"),
                "dar_fusion": settings.get("dar_fusion"),
            }
        return cls(**values, **extra)


def load_session_llm(spec: SessionSpec) -> Any:
    """The spec's LLM (shared per process), or None."""
    if not spec.has_llm:
        return None
    from convir.llm import load_llm

    return load_llm(spec.llm.strip())  # type: ignore[union-attr]


def build_imagination(spec: SessionSpec, llm: Any) -> Any:
    """A fresh imagination stage for one conversation, or None (off, or no usable generator:
    the conversation then runs text-only and ``convir.imagine`` has said why)."""
    settings = spec.imagination_settings()
    if settings is None:
        return None
    from convir.imagine import load_imagination
    from convir.imagine.options import imagination_options

    return load_imagination(settings["imagine"], settings["generator"], llm, **imagination_options(settings))


def build_conversation(spec: SessionSpec, gallery: Any, *, llm: Any = None, state: Any = None) -> Any:
    """The conversation ``spec`` describes over ``gallery`` (see the module docstring).

    ``llm``: an already loaded LLM (the service holds one); by default ``spec.llm`` is loaded
    (once per process). ``state``: a saved :class:`~convir.dialog.state.DialogState` to continue.
    """
    from convir.dialog.engine import Conversation
    from convir.dialog.questioners import load_questioner
    from convir.dialog.strategies import load_strategy

    spec = spec.validate(have_llm=True if llm is not None else None)
    model = llm if llm is not None else load_session_llm(spec)
    from convir.dialog.answers import AnswerAwareStrategy, AnswerModel
    from convir.dialog.reference import ReferenceStrategy

    inner = load_strategy(spec.strategy, model, reranker=spec.reranker, mode=spec.mode)
    inner = ReferenceStrategy(inner, spec.reference_weight)
    strategy = AnswerAwareStrategy(inner, aware=spec.answers == "aware", model=AnswerModel(pool=spec.depth))
    questioner = load_questioner(spec.questioner or "none", model)
    imagination = build_imagination(spec, model)
    k = imagination.result_count(spec.k) if imagination is not None else spec.k
    return Conversation(
        gallery, strategy, questioner, k=k, depth=spec.depth, state=state, imagination=imagination, spec=spec
    )


def build_answerer(
    spec: SessionSpec,
    *,
    llm: Any = None,
    captions_by_id: dict[str, list[str]] | None = None,
    image_paths_by_id: dict[str, str] | None = None,
    all_captions_by_id: dict[str, list[str]] | None = None,
    encoder: Any = None,
) -> Any:
    """The simulated user ``spec.answerer`` names (eval), with its held-out data."""
    from convir.simulate.answerers import load_answerer

    if spec.answerer is None:
        raise ConvirError("no simulated user (answerer) in this session spec")
    model = llm if llm is not None else load_session_llm(spec)
    return load_answerer(
        spec.answerer,
        llm=model,
        captions_by_id=captions_by_id,
        vlm=spec.vlm,
        image_paths_by_id=image_paths_by_id,
        all_captions_by_id=all_captions_by_id,
        encoder=encoder,
    )
