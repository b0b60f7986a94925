"""A tiny random-weight Stable Diffusion pipeline, for tests and the overhead benchmark.

No pretrained diffusion weights can be downloaded in CI, so this builds a real
``StableDiffusionPipeline`` from configs (UNet 8/16 channels, a 2-block VAE, a 1-layer CLIP
text encoder with a byte-level tokenizer), saves it with ``save_pretrained`` and lets the
production loader (``diffusers:FOLDER``) read it back. The images are noise-like, but every
code path a real model takes (tokenise, encode, denoise, decode, cache) runs for real.
"""

from __future__ import annotations

from pathlib import Path


def _byte_vocab() -> dict[str, int]:
    """Byte-level BPE vocabulary without merges: every byte is a token."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


def build_tiny_pipeline(folder: Path | str, sample_size: int = 16, seed: int = 0) -> Path:
    """Write a tiny StableDiffusionPipeline to ``folder``; default output is
    ``sample_size * 2`` pixels square (the VAE downsamples by 2)."""
    from convir._compat import ensure_torchvision

    ensure_torchvision()
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as dlogging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dlogging.set_verbosity_error()
    folder = Path(folder)
    tokenizer = CLIPTokenizer(vocab=_byte_vocab(), merges=[], model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=4,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
