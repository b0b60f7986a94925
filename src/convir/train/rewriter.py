"""``convir train rewriter``: LoRA fine-tuning of a causal LM for conversational query rewriting.

The model learns to answer exactly the prompt the ``rewrite`` strategy sends
(``prompts/rewrite.chat.txt`` when the tokenizer has a chat template, which is how
:class:`convir.llm.hf.HFLLM` decides, else ``rewrite.fewshot.txt``) with the self-contained
query; the loss covers the answer tokens only. ReCQR's two stages:

* **T**: text-only records;
* **M**: continue from T on records whose history holds images. Without a vision tower (the
  offline models) each image is its caption written into the dialogue ("[image: ...]");
  feeding pixels to a VLM is not implemented.

Base models: ``hf:MODEL_ID_OR_PATH`` or ``llamacpp:smollm2`` / ``llamacpp:gemma3-270m`` /
``llamacpp:/path/model.gguf``, whose GGUF file transformers loads and dequantises
(``from_pretrained(folder, gguf_file=...)``, needs the ``gguf`` package). The adapter is merged
into the weights, so ``OUT`` is a plain transformers folder: ``--llm hf:OUT`` works with every
strategy. The stage adapters are kept in ``OUT/adapter-T`` and ``OUT/adapter-M`` (small).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convir.errors import ConvirError
from convir.train.data import RewriteRecord
from convir.train.run import (
    Stopwatch,
    WorkFolder,
    progress_callback,
    quiet_trainer,
    set_seed,
    trainer_args,
    warmup_steps,
)

STAGES = ("T", "M")


@dataclass
class RewriterOptions:
    base: str = "llamacpp:smollm2"
    stages: tuple[str, ...] = STAGES
    max_t: int = 80
    max_m: int = 32
    epochs: int = 1
    batch_size: int = 4
    lr: float = 3e-4
    lora_r: int = 8
    lora_alpha: int = 16
    max_length: int = 384
    seed: int = 0
    save_steps: int = 10
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(opts: RewriterOptions) -> None:
    """Options and the base model reference, checked before anything loads."""
    from convir.llm import KINDS
    from convir.specs import parse_spec

    s = parse_spec(opts.base, KINDS)
    if s.kind == "openai":
        raise ConvirError(
            "--base openai:... is a remote server: training needs the weights (hf: or llamacpp:)"
        )
    if s.kind == "llamacpp":
        from convir.llm.llamacpp import resolve_model

        resolve_model(s.rest)  # a missing alias package / file fails here
    if s.kind == "hf":
        from convir.llm.base import LLMError
        from convir.specs import local_or_hub

        local_or_hub(s.rest, "hf", "hf:HuggingFaceTB/SmolLM2-135M-Instruct or hf:/path", LLMError)
    bad = [x for x in opts.stages if x not in STAGES]
    if bad or not opts.stages or len(set(opts.stages)) != len(opts.stages):
        raise ConvirError(f"--stages must be T, M or T,M (in that order), not {','.join(opts.stages)!r}")
    if list(opts.stages) != [x for x in STAGES if x in opts.stages]:
        raise ConvirError("--stages: M continues from T, so T comes first (T,M)")
    if opts.epochs < 1 or opts.batch_size < 1 or opts.lora_r < 1 or opts.max_length < 32:
        raise ConvirError("--epochs, --batch-size and --lora-r must be >= 1 and --max-length >= 32")
    if not 0 < opts.lr < 1:
        raise ConvirError(f"--lr {opts.lr} is not a sensible learning rate (LoRA: 1e-4 .. 5e-4)")
    if opts.max_t < 0 or opts.max_m < 0:
        raise ConvirError("--max-t and --max-m must be >= 0")


def load_base(spec: str, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) in float32; GGUF files are dequantised by transformers."""
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF dequantisation bar (raw tqdm); ours follows
    kind, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {}
    if kind == "llamacpp":
        from convir.llm.llamacpp import resolve_model

        gguf, _ = resolve_model(rest)
        try:
            import gguf as _gguf  # noqa: F401
        except ImportError as exc:
            raise ConvirError(
                "loading a GGUF base needs the gguf package: pip install 'convir[train]'"
            ) from exc
        from transformers import GgufConfig

        # dequantize=True gives plain float Linear layers that train and save as a normal model;
        # left to itself transformers may keep GGUF blocks, which the Trainer refuses to train.
        folder = str(gguf.parent)
        kwargs = {"gguf_file": gguf.name, "quantization_config": GgufConfig(dequantize=True)}
    else:
        from convir.llm.hf import _resolve

        folder, local = _resolve(rest)
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tok = AutoTokenizer.from_pretrained(folder, **{k: v for k, v in kwargs.items() if k == "gguf_file"})
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConvirError(f"cannot load {spec} for training: {type(exc).__name__}: {exc}") from exc
    if getattr(model, "is_quantized", False) or getattr(model.config, "quantization_config", None):
        raise ConvirError(
            f"{spec} loaded as a quantized model, which cannot be trained; give an unquantized base"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device), tok


def prompt_and_answer(record: RewriteRecord, tok: Any) -> tuple[str, str, bool]:
    """(prompt text, answer text, add special tokens?) exactly as ``HFLLM`` would be asked."""
    from convir.llm.prompts import chat_messages, fewshot_prompt

    dialogue = record.state().dialogue_text()
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(
            chat_messages("rewrite", dialogue=dialogue), tokenize=False, add_generation_prompt=True
        )
        return str(text), record.target + "\n", False
    return fewshot_prompt("rewrite", dialogue=dialogue), " " + record.target + "\n", True


def tokenize(records: list[RewriteRecord], tok: Any, max_length: int) -> list[dict[str, list[int]]]:
    """input_ids / labels per record; prompt tokens are masked (-100) so only the answer is learnt.
    A record too long for ``max_length`` keeps its answer and loses the start of the prompt."""
    rows = []
    for r in records:
        prompt, answer, specials = prompt_and_answer(r, tok)
        p = tok(prompt, add_special_tokens=specials)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            a = [*a, tok.eos_token_id]
        a = a[: max_length // 2]
        p = p[-(max_length - len(a)) :]
        rows.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return rows


def _collate(pad_id: int) -> Any:
    import torch

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        n = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [pad_id] * (n - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (n - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (n - len(r["input_ids"])) for r in rows]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def pick(records: list[RewriteRecord], n: int, seed: int) -> list[RewriteRecord]:
    """A seeded subset of ``n`` records (all when fewer)."""
    rng = random.Random(seed)
    chosen = list(records)
    rng.shuffle(chosen)
    return chosen[:n]


def train_rewriter(
    records: list[RewriteRecord], source: str, out: Path, opts: RewriterOptions, quiet: bool = False
) -> dict:
    """T then M LoRA stages on ``records``; writes the merged model to ``out``."""
    validate(opts)
    by_stage = {
        "T": pick([r for r in records if not r.multimodal], opts.max_t, opts.seed),
        "M": pick([r for r in records if r.multimodal], opts.max_m, opts.seed + 1),
    }
    for stage in opts.stages:
        if not by_stage[stage]:
            kind = "text-only" if stage == "T" else "with images in the history"
            raise ConvirError(
                f"stage {stage} needs records {kind}; {source} has none (or --max-{stage.lower()} 0)"
            )
    work = WorkFolder(
        out,
        {
            "kind": "rewriter",
            "data": source,
            **{f"n_{s}": len(by_stage[s]) for s in opts.stages},
            **opts.to_dict(),
        },
    )
    work.check_out()
    from convir._compat import ensure_torchvision

    ensure_torchvision()  # peft imports transformers' models, which import torchvision
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Trainer

    clock = Stopwatch()
    set_seed(opts.seed)
    model, tok = load_base(opts.base, opts.device)
    work.start()
    stats: dict[str, Any] = {}
    peft_model: Any = None
    for stage in opts.stages:
        adapter = work.partial / f"adapter-{stage}"
        if peft_model is None:
            prev = work.partial / "adapter-T"
            if stage == "M" and prev.exists():
                peft_model = PeftModel.from_pretrained(model, str(prev), is_trainable=True)
            else:
                cfg = LoraConfig(
                    r=opts.lora_r,
                    lora_alpha=opts.lora_alpha,
                    lora_dropout=0.05,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                )
                peft_model = get_peft_model(model, cfg)
        if (adapter / "adapter_config.json").exists():  # stage finished before a kill
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter)))
            stats[stage] = {"records": len(by_stage[stage]), "resumed": "finished"}
            continue
        rows = tokenize(by_stage[stage], tok, opts.max_length)
        from datasets import Dataset

        dataset = Dataset.from_list(rows)
        ckpts = work.partial / f"checkpoints-{stage}"
        args = trainer_args(
            ckpts,
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            warmup=warmup_steps(len(dataset) * opts.epochs, opts.batch_size, 0.1),
            seed=opts.seed + (1 if stage == "M" else 0),
            save_steps=opts.save_steps,
            device=opts.device,
            data_seed=opts.seed,
        )
        bar = progress_callback(f"train rewriter {stage}", quiet)
        trainer = Trainer(
            model=peft_model,
            args=args,
            train_dataset=dataset,
            data_collator=_collate(tok.pad_token_id),
            callbacks=[bar],
        )
        quiet_trainer(trainer)
        resume = _last_checkpoint(ckpts)
        trainer.train(resume_from_checkpoint=resume)
        tmp = work.partial / f".adapter-{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        peft_model.save_pretrained(str(tmp))
        os.replace(tmp, adapter)
        shutil.rmtree(ckpts, ignore_errors=True)
        stats[stage] = {
            "records": len(rows),
            "steps": int(trainer.state.global_step),
            "resumed_from": Path(resume).name if resume else None,
            "loss": bar.losses,
        }
    merged = peft_model.merge_and_unload()

    def save(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        for stage in opts.stages:
            shutil.copytree(work.partial / f"adapter-{stage}", tmp / f"adapter-{stage}")

    info = {
        "spec": f"hf:{work.out}",
        "base": opts.base,
        "prompt": "rewrite.chat.txt" if getattr(tok, "chat_template", None) else "rewrite.fewshot.txt",
        "stages": stats,
        "examples": sum(s["records"] for s in stats.values()),
        "steps": sum(s.get("steps", 0) for s in stats.values()),
        **clock.report(),
    }
    work.finish(save, info)
    return info


def _last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None
