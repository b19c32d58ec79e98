"""Tiny Idefics2, Idefics3 and SmolVLM builders ("User:<image>...<end_of_utterance>" prompts)."""

from __future__ import annotations

from typing import Any

from . import templates
from .common import HEADS, HIDDEN, clip_vision, llama_text, token_ids
from .tokenizer import make_fast_tokenizer, padded_vocab

# Idefics3/SmolVLM split an image into tiles of TILE px (+ a global view); each tile has
# (TILE / PATCH)^2 = 16 patches, pixel-shuffled by SCALE=2 into 4 image tokens.
TILE = 32
PATCH = 8
SCALE = 2
TILE_TOKENS = (TILE // PATCH) ** 2 // SCALE**2
# The processors look these up by name: row/col markers for up to 6x6 tiles, then the global view.
GRID_TOKENS = tuple(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6))
IDEFICS3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *GRID_TOKENS,
)


def _tiled_tokenizer(bos: str, pad: str, extra_specials: tuple[str, ...] = ()) -> Any:
    # The template writes BOS itself, so the tokenizer must not add a second one.
    return make_fast_tokenizer(
        (*IDEFICS3_SPECIALS, *extra_specials),
        bos=bos,
        eos="<end_of_utterance>",
        pad=pad,
        extra={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )


def _tiled_config(config_cls: Any, tokenizer: Any) -> Any:
    ids = token_ids(tokenizer, image="<image>", eos="<end_of_utterance>", pad=tokenizer.pad_token)
    return config_cls(
        vision_config=clip_vision(TILE, PATCH),
        text_config={
            "model_type": "llama",
            **llama_text(
                padded_vocab(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
            ),
        },
        image_token_id=ids["image"],
        scale_factor=SCALE,
        pad_token_id=ids["pad"],
    )


def _tiled_sizes() -> dict[str, Any]:
    # Longest edge 64 -> at most 2x2 tiles of 32 px plus the 32 px global image.
    return {
        "size": {"longest_edge": 2 * TILE},
        "max_image_size": {"longest_edge": TILE},
        "do_image_splitting": True,
    }


def build_idefics3() -> tuple[Any, Any]:
    """Idefics3 (Llama-3 text model, SigLIP-style tower, pixel-shuffle connector)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    tokenizer = _tiled_tokenizer("<|begin_of_text|>", "<|end_of_text|>")
    model = Idefics3ForConditionalGeneration(_tiled_config(Idefics3Config, tokenizer))
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**_tiled_sizes()),
        tokenizer=tokenizer,
        image_seq_len=TILE_TOKENS,
        chat_template=templates.IDEFICS,
    )
    return model, processor


def build_smolvlm() -> tuple[Any, Any]:
    """SmolVLM: Idefics3 architecture with a ChatML-ish tokenizer; its processor needs num2words."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tokenizer = _tiled_tokenizer(
        "<|im_start|>", "<|im_end|>", ("<|im_start|>", "<|im_end|>", "<video>")
    )
    model = SmolVLMForConditionalGeneration(_tiled_config(SmolVLMConfig, tokenizer))
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(**_tiled_sizes()),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(
            size={"longest_edge": TILE}, max_image_size={"longest_edge": TILE}
        ),
        image_seq_len=TILE_TOKENS,
        chat_template=templates.IDEFICS,
    )
    return model, processor


def build_idefics2() -> tuple[Any, Any]:
    """Idefics2: Mistral text model; a perceiver resampler turns each image into 4 latents."""
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        Idefics2ImageProcessor,
        Idefics2Processor,
    )

    tokenizer = make_fast_tokenizer(
        (
            "<unk>",
            "<s>",
            "</s>",
            "<pad>",
            "<fake_token_around_image>",
            "<image>",
            "<end_of_utterance>",
        ),
        bos="<s>",
        eos="<end_of_utterance>",
        pad="<pad>",
        unk="<unk>",
    )
    ids = token_ids(tokenizer, image="<image>", eos="<end_of_utterance>", pad="<pad>")
    latents = 4
    config = Idefics2Config(
        vision_config=clip_vision(2 * TILE, PATCH),
        perceiver_config={
            "hidden_size": HIDDEN,
            "resampler_n_latents": latents,
            "resampler_depth": 1,
            "resampler_n_heads": HEADS,
            "resampler_head_dim": HIDDEN // HEADS,
            "num_key_value_heads": HEADS,
        },
        text_config={
            "model_type": "mistral",
            **llama_text(
                padded_vocab(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
                sliding_window=None,
            ),
        },
        image_token_id=ids["image"],
    )
    model = Idefics2ForConditionalGeneration(config)
    processor = Idefics2Processor(
        image_processor=Idefics2ImageProcessor(
            size={"shortest_edge": TILE, "longest_edge": 2 * TILE}, do_image_splitting=False
        ),
        tokenizer=tokenizer,
        image_seq_len=latents,
        chat_template=templates.IDEFICS,
    )
    return model, processor


def build_idefics() -> tuple[Any, Any]:
    """IDEFICS (v1): Llama decoder with gated cross-attention to CLIP features; plain prompts."""
    from transformers import (
        IdeficsConfig,
        IdeficsForVisionText2Text,
        IdeficsImageProcessor,
        IdeficsProcessor,
    )

    tokenizer = make_fast_tokenizer(
        ("<unk>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"),
        bos="<s>",
        eos="</s>",
        pad="<unk>",
        unk="<unk>",
        extra={"image_token": "<image>"},
    )
    ids = token_ids(tokenizer, bos="<s>", eos="</s>", pad="<unk>")
    text = llama_text(padded_vocab(tokenizer))
    config = IdeficsConfig(
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_hidden_layers"],
        num_attention_heads=text["num_attention_heads"],
        max_position_embeddings=text["max_position_embeddings"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        cross_layer_interval=1,
        # The real zero-initialised gates would make the image invisible to a random model
        # ("normal" with float gates crashes in transformers 5.x, so open them fully).
        alpha_initializer="ones",
        freeze_text_layers=False,
        freeze_vision_layers=False,
        vision_config={
            "embed_dim": HIDDEN,
            "image_size": TILE,
            "patch_size": PATCH,
            "num_hidden_layers": 2,
            "num_attention_heads": HEADS,
            "intermediate_size": 2 * HIDDEN,
        },
    )
    processor = IdeficsProcessor(
        image_processor=IdeficsImageProcessor(image_size=TILE),
        tokenizer=tokenizer,
        image_size=TILE,
    )
    return IdeficsForVisionText2Text(config), processor
