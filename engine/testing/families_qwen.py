"""Tiny Qwen2-VL and Qwen2.5-VL builders: ChatML template, dynamic-resolution image processor."""

from __future__ import annotations

from typing import Any

from . import templates
from .common import HEADS, HIDDEN, INTERMEDIATE, LAYERS, llama_text, token_ids
from .tokenizer import make_fast_tokenizer, padded_vocab

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Real checkpoints keep patch 14 and merge 2 (28 px per token); a small pixel budget keeps the
# token count tiny: a large image is resized to at most 112x112 -> 16 tokens, at least 56x56 -> 4.
PATCH = 14
MERGE = 2
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112
# head_dim 32 -> 16 rotary frequencies split over (temporal, height, width), like [16, 24, 24]/4.
MROPE_SECTION = [4, 6, 6]


def _qwen_tokenizer() -> Any:
    # Qwen tokenizers have no BOS; <|im_end|> ends a turn and <|endoftext|> pads.
    return make_fast_tokenizer(
        QWEN_SPECIALS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    )


def _processor_parts(tokenizer: Any) -> tuple[Any, Any]:
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    sizes = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    common = {"patch_size": PATCH, "merge_size": MERGE, "temporal_patch_size": 2}
    image_processor = Qwen2VLImageProcessor(**sizes, **common)
    video_processor = Qwen2VLVideoProcessor(**sizes, **common)
    return image_processor, video_processor


def _text_config(tokenizer: Any, ids: dict[str, int]) -> dict[str, Any]:
    return llama_text(
        padded_vocab(tokenizer),
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        bos_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": MROPE_SECTION},
    )


def _ids(tokenizer: Any) -> dict[str, int]:
    return token_ids(
        tokenizer,
        image="<|image_pad|>",
        video="<|video_pad|>",
        vstart="<|vision_start|>",
        vend="<|vision_end|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )


def build_qwen2_vl() -> tuple[Any, Any]:
    """Qwen2-VL: ViT with 2x2 patch merger, M-RoPE text model."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tokenizer = _qwen_tokenizer()
    ids = _ids(tokenizer)
    config = Qwen2VLConfig(
        text_config=_text_config(tokenizer, ids),
        vision_config={
            "depth": LAYERS,
            "embed_dim": HIDDEN,
            "hidden_size": HIDDEN,  # merger output = text hidden size
            "mlp_ratio": INTERMEDIATE // HIDDEN,
            "num_heads": HEADS,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vstart"],
        vision_end_token_id=ids["vend"],
    )
    model = Qwen2VLForConditionalGeneration(config)
    image_processor, video_processor = _processor_parts(tokenizer)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=templates.QWEN2_VL,
    )
    return model, processor


def build_qwen2_5_vl() -> tuple[Any, Any]:
    """Qwen2.5-VL: windowed-attention ViT (SwiGLU MLP), same prompt format as Qwen2-VL."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    tokenizer = _qwen_tokenizer()
    ids = _ids(tokenizer)
    config = Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, ids),
        vision_config={
            "depth": LAYERS,
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_heads": HEADS,
            "out_hidden_size": HIDDEN,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": 2,
            # 56 px windows (2x2 merged tokens) so the windowed path really runs; last block global.
            "window_size": 56,
            "fullatt_block_indexes": [LAYERS - 1],
        },
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vstart"],
        vision_end_token_id=ids["vend"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    image_processor, video_processor = _processor_parts(tokenizer)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=templates.QWEN2_VL,
    )
    return model, processor
