"""ChatIR's recipe for image-text encoders: train the text tower against frozen image embeddings.

The image tower stays frozen (the gallery need not be re-indexed... except that the text
tower's queries now land elsewhere: the image vectors of an index built with the base model
stay valid, which is the point of freezing them). Each batch holds one dialogue query per
target image; the loss is InfoNCE (cross-entropy over text x image similarities scaled by
the model's own ``logit_scale``) against the batch's images plus one mined hard-negative image
per query. Trained with transformers' ``Trainer`` so checkpoints and resume work as for the
caption encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convir.errors import ConvirError
from convir.train.data import Pair, PairSet, group_unique_order
from convir.train.run import (
    Stopwatch,
    WorkFolder,
    progress_callback,
    quiet_trainer,
    set_seed,
    trainer_args,
    warmup_steps,
)

VISION_PREFIXES = ("visual", "vision_model", "visual_projection", "vision_")
OPEN_CLIP_FILE = "open_clip_model.pt"


def is_text_param(name: str) -> bool:
    """Text-tower parameters (trained); the vision tower and the logit scale/bias stay frozen."""
    return not (name.startswith(VISION_PREFIXES) or name.startswith("logit_"))


def _image_vectors(encoder: Any, data: PairSet, groups: list[str]) -> dict[str, np.ndarray]:
    """Frozen image embeddings of the training targets (from their image files)."""
    from convir.encoders.base import encode_images_skipping

    have = [g for g in groups if data.images.get(g)]
    if not have:
        raise ConvirError(
            f"{encoder.spec} is an image-text encoder: its text tower learns against the target images, "
            'but the training data names none (coco5k-sim: add --image-root; pairs JSONL: an "image" key; '
            "or use a flickr8k-sim folder, which has images)"
        )
    vecs, ok, bad = encode_images_skipping(encoder, [Path(data.images[g]) for g in have], 32)
    if not ok:
        raise ConvirError(f"none of the {len(have)} target images could be read, e.g. {bad[0][1]}")
    return {have[i]: vecs[k] for k, i in enumerate(ok)}


class _Contrastive:
    """Builds the nn.Module lazily (torch is imported only when training)."""

    @staticmethod
    def make(encoder: Any, images: np.ndarray) -> Any:
        import torch
        from torch import nn

        kind = "open_clip" if encoder.spec.startswith("open_clip:") else "hf"

        class TextTowerLoss(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = encoder.model
                self.register_buffer("images", torch.as_tensor(images, dtype=torch.float32), persistent=False)
                scale = getattr(self.model, "logit_scale", None)
                value = float(scale.exp()) if scale is not None else 100.0
                self.scale = min(value, 100.0)
                for name, p in self.model.named_parameters():
                    p.requires_grad_(is_text_param(name))

            def text(self, input_ids: Any, attention_mask: Any = None) -> Any:
                if kind == "open_clip":
                    feats = self.model.encode_text(input_ids)
                else:
                    from convir.encoders.hf import _features

                    feats = _features(
                        self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
                    )
                return torch.nn.functional.normalize(feats.float(), dim=-1)

            def forward(
                self, input_ids: Any, positive: Any, negative: Any = None, attention_mask: Any = None
            ) -> Any:
                t = self.text(input_ids, attention_mask)
                cands = self.images[positive]
                if negative is not None:
                    cands = torch.cat([cands, self.images[negative]])
                logits = self.scale * t @ cands.T
                labels = torch.arange(len(t), device=t.device)
                return {"loss": torch.nn.functional.cross_entropy(logits, labels)}

        return TextTowerLoss()


def _collator(encoder: Any) -> Any:
    import torch

    open_clip = encoder.spec.startswith("open_clip:")

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        texts = [r["anchor"] for r in rows]
        batch: dict[str, Any] = {"positive": torch.tensor([r["positive"] for r in rows])}
        if "negative" in rows[0]:
            batch["negative"] = torch.tensor([r["negative"] for r in rows])
        if open_clip:
            batch["input_ids"] = encoder.tokenizer(texts)
        else:
            enc = encoder.tokenizer(texts, return_tensors="pt", **encoder._text_kwargs)
            batch["input_ids"] = enc["input_ids"]
            if "attention_mask" in enc:
                batch["attention_mask"] = enc["attention_mask"]
        return batch

    return collate


def train_text_tower(data: PairSet, pairs: list[Pair], work: WorkFolder, opts: Any, quiet: bool) -> dict:
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    from convir.encoders import load_encoder
    from convir.train.encoder import mine_negatives

    clock = Stopwatch()
    set_seed(opts.seed)
    encoder = load_encoder(opts.base, device=opts.device)
    work.start()
    vectors = _image_vectors(encoder, data, sorted({p.group for p in pairs}))
    groups = sorted(vectors)
    where = {g: i for i, g in enumerate(groups)}
    images = np.stack([vectors[g] for g in groups])

    def build() -> list[dict[str, Any]]:
        kept = [p for p in pairs if p.group in where]
        rows = [{"anchor": p.query, "positive": where[p.group]} for p in kept]
        if opts.hard_negatives is not None and len(groups) > 2:
            q = encoder.encode_text([p.query for p in kept], batch_size=64)
            picks = mine_negatives(q, [p.group for p in kept], groups, images, opts.hard_negatives, opts.seed)
            for r, g in zip(rows, picks, strict=True):
                r["negative"] = g
        return rows

    rows = work.examples(build)
    if not rows:
        raise ConvirError("no training pair has a readable target image")
    order = group_unique_order([str(r["positive"]) for r in rows], opts.batch_size, opts.epochs, opts.seed)
    dataset = Dataset.from_list([rows[i] for i in order])
    module = _Contrastive.make(encoder, images)
    module.train()

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return SequentialSampler(self.train_dataset)

    args = trainer_args(
        work.checkpoints,
        epochs=1,
        batch_size=opts.batch_size,
        lr=opts.lr,
        warmup=warmup_steps(len(dataset), opts.batch_size, opts.warmup_ratio),
        seed=opts.seed,
        save_steps=opts.save_steps,
        device=opts.device,
    )
    bar = progress_callback("train text tower", quiet)
    trainer = SequentialTrainer(
        model=module, args=args, train_dataset=dataset, data_collator=_collator(encoder), callbacks=[bar]
    )
    quiet_trainer(trainer)
    resume = work.last_checkpoint()
    trainer.train(resume_from_checkpoint=resume)
    encoder.model.eval()

    if encoder.spec.startswith("open_clip:"):
        arch = encoder.spec.partition(":")[2].split("/")[0]
        spec = f"open_clip:{arch}//{work.out / OPEN_CLIP_FILE}"

        def save(tmp: Path) -> None:
            import torch

            tmp.mkdir(parents=True, exist_ok=True)
            torch.save(encoder.model.state_dict(), tmp / OPEN_CLIP_FILE)
    else:
        spec = f"hf:{work.out}"

        def save(tmp: Path) -> None:
            encoder.model.save_pretrained(tmp)
            encoder.tokenizer.save_pretrained(tmp)
            encoder.image_processor.save_pretrained(tmp)

    info = {
        "spec": spec,
        "base": opts.base,
        "objective": "InfoNCE of the text tower against frozen image embeddings (ChatIR)"
        + (
            f" + hard negatives from ranks {opts.hard_negatives[0]}-{opts.hard_negatives[1]}"
            if opts.hard_negatives
            else ""
        ),
        "examples": len(rows),
        "images": len(groups),
        "steps": int(trainer.state.global_step),
        "resumed_from": Path(resume).name if resume else None,
        "loss": bar.losses,
        **clock.report(),
    }
    work.finish(save, info)
    return info
