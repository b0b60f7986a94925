"""``convir chat``: an interactive terminal session over the shared conversation loop.

The session is saved (atomically) after every turn, so closing the terminal, Ctrl-C or an
LLM failure never loses it; ``--resume FILE`` continues where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from convir.dialog.engine import Conversation, TurnResult
from convir.dialog.state import DialogState
from convir.errors import ConvirError

HELP = """Type an answer to the question, or any extra detail. Commands:
  /found N   result N is the image you wanted (ends the session)
  /say TEXT  add a detail without answering the question
  /skip      skip the question (it is not asked again)
  /save      save the session now        /quit  save and leave        /help  this text"""


def run_chat(
    index_dir: Path,
    strategy: str,
    questioner: str | None,
    llm: str | None,
    k: int,
    save: Path | None,
    resume: Path | None,
    console: Any,
    read: Any = input,
    reranker: str = "llm",
    previews: str = "auto",
    imagine: dict[str, Any] | None = None,
) -> DialogState:
    """``reranker``: second stage of ``--strategy rerank`` (llm | llm-list | cross:MODEL);
    ``previews``: inline thumbnails of the top results (auto | on | off, see convir.preview);
    ``imagine``: imagination settings (convir.imagine.options.imagine_settings) or None."""
    from convir.dialog.questioners import load_questioner
    from convir.dialog.strategies import load_strategy
    from convir.preview import PREVIEW_MODES
    from convir.search import open_index

    if previews not in PREVIEW_MODES:
        raise ConvirError(f"unknown --previews {previews!r}; use auto, on or off")
    idx = open_index(index_dir)
    model = None
    if llm:
        from convir.llm import load_llm

        model = load_llm(llm)
    strat = load_strategy(strategy, model, reranker=reranker)
    quest = load_questioner(questioner or ("plain" if model else "none"), model)
    imag = _load_imagination(console, imagine, model)
    if imag is not None and imag.name == "refiner":
        k = max(k, imag.dial_num + imag.image_num)  # the merged list: 7 dialogue + 3 image results
    save = save or Path.cwd() / f"convir-session-{time.strftime('%Y%m%d-%H%M%S')}.json"
    console.print(
        f"[bold]convir chat[/] over {idx.root} ({len(idx)} items, {idx.encoder_spec}); "
        f"strategy {strat.name}, questioner {quest.name}; session file {save}"
    )
    console.print(HELP, markup=False)
    if resume:
        conv = Conversation(idx, strat, quest, k=k, state=DialogState.load(resume), imagination=imag)
        res = conv.resume()
    else:
        conv = Conversation(idx, strat, quest, k=k, imagination=imag)
        res = None
        while res is None:
            text = read("Describe the image you are looking for: ").strip()
            if text in ("/quit", ""):
                if text == "/quit":
                    raise ConvirError("no description given; nothing saved")
                continue
            res = _safe(console, conv.start, text)
    _show(console, idx, res, k, previews=previews)
    while True:
        conv.state.save(save)  # type: ignore[union-attr]
        prompt = "answer> " if res.question else "detail> "
        try:
            text = read(prompt).strip()
        except EOFError:
            text = "/quit"
        if text in ("/quit", "/q"):
            console.print(f"session saved to {save}; continue with --resume {save}")
            return conv.state  # type: ignore[return-value]
        if text == "/help":
            console.print(HELP, markup=False)
            continue
        if text == "/save":
            console.print(f"saved to {save}")
            continue
        if text.startswith("/found"):
            arg = text.removeprefix("/found").strip()
            shown = conv.state.rankings[-1] if conv.state and conv.state.rankings else []
            if not arg.isdigit() or not 1 <= int(arg) <= len(shown):
                console.print(f"give the result number, 1-{len(shown)}: /found 3")
                continue
            conv.mark_found(shown[int(arg) - 1])
            conv.state.save(save)  # type: ignore[union-attr]
            console.print(
                f"found {shown[int(arg) - 1]} after {len(conv.state.exchanges)} turns; saved to {save}"
            )
            return conv.state  # type: ignore[return-value]
        if text == "/skip":
            new = _safe(console, conv.reply, "") if res.question else None
        elif text.startswith("/say "):
            new = _safe(console, conv.say, text[5:], _image_feedback(console, read, res))
        elif text.startswith("/"):
            console.print(f"unknown command {text.split()[0]}; /help lists them")
            continue
        elif not text:
            continue
        elif res.question:
            new = _safe(console, conv.reply, text, _image_feedback(console, read, res))
        else:
            new = _safe(console, conv.say, text, _image_feedback(console, read, res))
        if new is not None:
            res = new
            _show(console, idx, res, k, previews=previews)


def _safe(console: Any, fn: Any, text: str, image_feedback: str | None = None) -> TurnResult | None:
    """Run one turn; a failure (LLM down, bad input) is reported and the session goes on."""
    try:
        return fn(text) if image_feedback is None else fn(text, image_feedback=image_feedback)
    except ConvirError as exc:
        console.print(f"[red]could not complete this turn:[/] {exc}", highlight=False)
        return None


PREVIEW_TOP = 3  # thumbnails of the first results only, to keep a turn short


def _show(console: Any, idx: Any, res: TurnResult, k: int, previews: str = "auto") -> None:
    from rich.table import Table

    pos = res.ranking.positions[:k]
    caps = idx.captions(pos)
    paths = {i: h.path for i, h in idx.store.items([idx.ids[int(p)] for p in pos]).items()}
    table = Table(title=f"turn {res.turn}: {res.ranking.query}", title_justify="left")
    for col in ("#", "id", "caption", "path"):
        table.add_column(col)
    for r, (p, c) in enumerate(zip(pos, caps, strict=True), 1):
        item_id = idx.ids[int(p)]
        table.add_row(str(r), item_id, c[0] if c else "", paths.get(item_id) or "")
    console.print(table)
    if previews != "off":
        from convir.preview import preview_results

        top = [idx.ids[int(p)] for p in pos[:PREVIEW_TOP]]
        preview_results(console, [(f"#{r} {i}", paths.get(i)) for r, i in enumerate(top, 1)], mode=previews)
    if res.images:
        _show_images(console, res, previews)
    if res.question:
        console.print(f"[bold cyan]Q:[/] {res.question}", highlight=False)


# -- imagination (docs/imagination.md) -----------------------------------------------------------
def _load_imagination(console: Any, settings: dict[str, Any] | None, llm: Any) -> Any:
    """The DAR / Image Refiner stage, or None (text-only; the reason is logged once)."""
    if not settings:
        return None
    from convir.imagine import load_imagination
    from convir.imagine.options import imagination_options

    imag = load_imagination(settings["imagine"], settings["generator"], llm, **imagination_options(settings))
    if imag is None:
        console.print("[yellow]imagination off[/]: the conversation is text-only", highlight=False)
    else:
        mode = "images" if imag.generator.makes_images else "prompts only (text: mode)"
        console.print(
            f"imagination: {imag.name} with {imag.generator.spec}, {imag.images_per_turn} per turn, {mode}",
            highlight=False,
        )
    return imag


def _show_images(console: Any, res: TurnResult, previews: str) -> None:
    """The images generated this turn: prompt and file (and thumbnails when the terminal can)."""
    console.print(f"[bold magenta]imagined ({len(res.images)}):[/]", highlight=False)
    for i, img in enumerate(res.images, 1):
        console.print(f"  [{i}] {img.prompt}", markup=False, highlight=False)
        if img.path:
            console.print(f"      {img.path}", markup=False, highlight=False)
    if previews != "off" and any(img.path for img in res.images):
        try:
            from convir.preview import preview_results

            items = [(f"[{i}]", img.path) for i, img in enumerate(res.images, 1)]
            preview_results(console, items, mode=previews)
        except Exception:  # a thumbnail must never break the chat
            pass
    if res.image_question:
        console.print(f"[bold magenta]images:[/] {res.image_question}", highlight=False)


def _image_feedback(console: Any, read: Any, res: TurnResult) -> str | None:
    """Ask how the shown images differ from the wanted photo (refiner); None when not asked."""
    if not res.image_question:
        return None
    try:
        return read("differences (empty = none)> ").strip() or None
    except EOFError:
        return None
