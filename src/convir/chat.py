"""``convir chat``: an interactive terminal session over the shared conversation loop.

The session is saved (atomically) after every turn, so closing the terminal, Ctrl-C or an
LLM failure never loses it; ``--resume FILE`` continues where it stopped (Ctrl-C prints that
command).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from convir.dialog.engine import TurnResult
from convir.dialog.session import SessionSpec
from convir.dialog.state import DialogState
from convir.errors import ConvirError

HELP = """Type an answer to the question, or any extra detail. Commands:
  /found N   result N is the image you wanted (ends the session)
  /more N    more like result N            /less N   not like result N
  /say TEXT  add a detail without answering the question
  /skip      skip the question (it is not asked again and adds nothing to the search)
  /save      save the session now        /quit  save and leave        /help  this text
Answers are read as typed: "idk" / "not sure" skip the question, "no, it is not on a road" is a
"no" and pushes down what mentions a road. An image-choice question takes the option's number,
none, "idk" (skip) or any other text (a detail)."""


def run_chat(
    index_dir: Path,
    spec: SessionSpec,
    save: Path | None,
    resume: Path | None,
    console: Any,
    read: Any = input,
    previews: str = "auto",
    overwrite: bool = False,
    like: str | None = None,
    image: Path | None = None,
) -> DialogState:
    """An interactive session over ``index_dir`` as ``spec`` describes it (strategy,
    questioner, LLM, imagination, results per turn). ``previews``: inline thumbnails of the
    top results (auto | on | off, see convir.preview). A resumed session keeps its file;
    ``save`` must not name an existing file unless it is the one resumed or ``overwrite``.
    ``like`` (an item id) / ``image`` (a photo, image-text encoders): start from that photo;
    the query is then a fused image + text vector (:mod:`convir.dialog.reference`)."""
    from convir.preview import PREVIEW_MODES

    if previews not in PREVIEW_MODES:
        raise ConvirError(f"unknown --previews {previews!r}; use auto, on or off")
    spec = spec.validate()  # every name checked before the index or any model loads
    if like is not None and image is not None:
        raise ConvirError("give --like ITEM_ID or --image PHOTO, not both")
    if (like is not None or image is not None) and resume is not None:
        raise ConvirError("--like / --image start a new session; a resumed one keeps its own photo")
    if image is not None and not Path(image).is_file():
        raise ConvirError(f"--image: {image} is not a file")
    state = DialogState.load(resume) if resume else None
    save = save or Path.cwd() / f"convir-session-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if save.exists() and not overwrite and (resume is None or save.resolve() != resume.resolve()):
        raise ConvirError(
            f"session file {save} already exists: continue it with --resume {save}, "
            "choose another --save file, or pass --overwrite"
        )
    try:
        return _converse(index_dir, spec, state, save, console, read, previews, like, image)
    except KeyboardInterrupt:
        console.print("\n" + _interrupted(index_dir, save), markup=False, highlight=False, soft_wrap=True)
        raise


def _interrupted(index_dir: Path, save: Path) -> str:
    """What Ctrl-C kept: the session file (saved after every turn) and the command that resumes it."""
    import shlex

    if not save.exists():
        return "interrupted before the first results; nothing was saved"
    command = f"convir chat {shlex.quote(str(index_dir))} --resume {shlex.quote(str(save))}"
    return f"interrupted; resume with `{command}`"


def _converse(
    index_dir: Path,
    spec: SessionSpec,
    state: DialogState | None,
    save: Path,
    console: Any,
    read: Any,
    previews: str,
    like: str | None = None,
    image: Path | None = None,
) -> DialogState:
    """The conversation itself, from opening the index to /found or /quit."""
    from convir.dialog.session import build_conversation
    from convir.search import open_index

    idx = open_index(index_dir)
    reference = None
    if like is not None or image is not None:
        from convir.dialog.reference import image_reference, like_reference

        reference = like_reference(idx, like) if like is not None else image_reference(idx, image)  # type: ignore[arg-type]
    conv = build_conversation(spec, idx, state=state)
    _say_imagination(console, spec, conv.imagination)
    k = conv.k
    console.print(
        f"[bold]convir chat[/] over {idx.root} ({len(idx)} items, {idx.encoder_spec}); "
        f"strategy {conv.strategy.name}, questioner {conv.questioner.name}; session file {save}"
    )
    console.print(HELP, markup=False)
    if state is not None:
        res = conv.resume()
    else:
        res = None
        ask = "Describe the image you are looking for: "
        if reference is not None:
            start = like or Path(image).name  # type: ignore[arg-type]
            ask = f"Starting from {start}: how should it differ? (Enter: just like it) "
        while res is None:
            text = _read(console, read, ask)
            if text == "/quit":
                raise ConvirError("no description given; nothing saved")
            if text.startswith("/"):
                console.print(
                    "describe the image first (e.g. 'a red boat at sunset'); commands such as "
                    f"{text.split()[0]} work once there are results",
                    markup=False,
                )
                continue
            if reference is not None:
                res = _safe(console, lambda t: conv.start(t, reference), text)
            elif text:
                res = _safe(console, conv.start, text)
    _show(console, idx, res, k, previews=previews)
    while True:
        conv.state.save(save)  # type: ignore[union-attr]
        prompt = "answer> " if res.question else "detail> "
        text = _read(console, read, prompt)
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
        if text.startswith(("/more", "/less")):
            cmd, _, arg = text.partition(" ")
            shown = conv.state.rankings[-1] if conv.state and conv.state.rankings else []
            if cmd not in ("/more", "/less") or not arg.strip().isdigit() or not 1 <= int(arg) <= len(shown):
                console.print(f"give the result number, 1-{len(shown)}: {cmd} 2", markup=False)
                continue
            fn = conv.more if cmd == "/more" else conv.less
            new = _turn(console, conv, save, fn, shown[int(arg) - 1], None)
        elif text == "/skip":
            if not res.question:
                console.print("there is no question to skip: type a detail, or /found N")
                continue
            new = _safe(console, conv.skip)
        elif text == "/say" or text.startswith("/say "):
            detail = text[4:].strip()
            if not detail:
                console.print("/say needs the detail to add, e.g. /say the sail is red", markup=False)
                continue
            new = _turn(console, conv, save, conv.say, detail, _image_feedback(console, read, res))
        elif text.startswith("/"):
            console.print(f"unknown command {text.split()[0]}; /help lists them")
            continue
        elif not text:
            continue
        elif res.question:
            new = _turn(console, conv, save, conv.reply, text, _image_feedback(console, read, res))
        else:
            new = _turn(console, conv, save, conv.say, text, _image_feedback(console, read, res))
        if new is not None:
            res = new
            _show(console, idx, res, k, previews=previews)


def _read(console: Any, read: Any, prompt: str) -> str:
    """One line from the user; end of input reads as /quit."""
    try:
        return str(read(prompt)).strip()
    except EOFError:
        return "/quit"


def _turn(console: Any, conv: Any, save: Path, fn: Any, text: str, image_feedback: str | None) -> Any:
    """Apply one turn; Ctrl-C while it runs says what was kept (the session as it was before
    this answer, already on disk) and re-raises so the command ends with exit 130."""
    try:
        return _safe(console, fn, text, image_feedback)
    except KeyboardInterrupt:
        console.print(
            f"\n{text!r} was not applied; the session is saved up to turn "
            f"{len(conv.state.rankings) - 1} in {save}",
            markup=False,
        )
        raise


def _safe(
    console: Any, fn: Any, text: str | None = None, image_feedback: str | None = None
) -> TurnResult | None:
    """Run one turn; a failure (LLM down, bad input) is reported and the session goes on."""
    try:
        if text is None:
            return fn()
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
    if res.options:
        _show_options(console, idx, res, previews)
    elif res.question:
        console.print(f"[bold cyan]Q:[/] {res.question}", highlight=False)


def _show_options(console: Any, idx: Any, res: TurnResult, previews: str) -> None:
    """An image-choice question: the options, numbered, with their captions (and thumbnails)."""
    from convir.dialog.infogain import CHOICE_QUESTION

    console.print(f"[bold cyan]Q:[/] {CHOICE_QUESTION}", highlight=False)
    pos = [idx.position[o] for o in res.options]
    caps = idx.captions(pos)
    for n, (item_id, c) in enumerate(zip(res.options, caps, strict=True), 1):
        console.print(f"  [{n}] {c[0] if c else ''}  ({item_id})", markup=False, highlight=False)
    console.print("  answer with a number, none, idk (skip), or describe it in words", highlight=False)
    if previews != "off":
        from convir.preview import preview_results

        paths = {i: h.path for i, h in idx.store.items(list(res.options)).items()}
        preview_results(
            console, [(f"[{n}]", paths.get(i)) for n, i in enumerate(res.options, 1)], mode=previews
        )


# -- imagination (docs/imagination.md) -----------------------------------------------------------
def _say_imagination(console: Any, spec: SessionSpec, imag: Any) -> None:
    """One line on whether the conversation imagines the target, and how."""
    if not spec.imagine:
        return
    if imag is None:
        console.print("[yellow]imagination off[/]: the conversation is text-only", highlight=False)
        return
    mode = "images" if imag.generator.makes_images else "prompts only (text: mode)"
    console.print(
        f"imagination: {imag.name} with {imag.generator.spec}, {imag.images_per_turn} per turn, {mode}",
        highlight=False,
    )


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
