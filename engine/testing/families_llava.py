"""Tiny LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision builders (real config and processor classes)."""

from __future__ import annotations

from typing import Any

from . import templates
from .common import HIDDEN, clip_vision, llama_text, token_ids
from .tokenizer import make_fast_tokenizer, padded_vocab

# 32 px images in 8 px patches: 16 patches + CLS; the "default" strategy drops CLS -> 16 tokens.
LLAVA_IMAGE = 32
LLAVA_PATCH = 8


def _llama_tokenizer(extra_specials: tuple[str, ...] = ()) -> Any:
    """Llama/Vicuna-style tokenizer: <unk>, <s>, </s>, <pad>, <image>; BOS added automatically."""
    return make_fast_tokenizer(
        ("<unk>", "<s>", "</s>", "<pad>", "<image>", *extra_specials),
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=True,
    )


def build_llava() -> tuple[Any, Any]:
    """LLaVA-1.5: CLIP vision tower + Llama text model, "USER: <image>\\n... ASSISTANT:" prompts."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _llama_tokenizer()
    ids = token_ids(tokenizer, image="<image>", bos="<s>", eos="</s>", pad="<pad>")
    num_patches = (LLAVA_IMAGE // LLAVA_PATCH) ** 2
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            **clip_vision(LLAVA_IMAGE, LLAVA_PATCH, projection_dim=HIDDEN),
        },
        text_config={
            "model_type": "llama",
            **llama_text(
                padded_vocab(tokenizer),
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
            ),
        },
        image_token_index=ids["image"],
        image_seq_length=num_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": LLAVA_IMAGE},
        crop_size={"height": LLAVA_IMAGE, "width": LLAVA_IMAGE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, removed again by the "default" strategy
        chat_template=templates.LLAVA,
        image_token="<image>",
    )
    return model, processor


# Any-resolution grids: multiples of the 32 px base tile, at most 2x2 tiles (+ the base view).
PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def build_llava_next() -> tuple[Any, Any]:
    """LLaVA-NeXT (Mistral flavour): any-resolution tiles, "[INST] <image>\\n... [/INST]"."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = _llama_tokenizer()
    ids = token_ids(tokenizer, image="<image>", bos="<s>", eos="</s>", pad="<pad>")
    config = LlavaNextConfig(
        vision_config={
            "model_type": "clip_vision_model",
            **clip_vision(LLAVA_IMAGE, LLAVA_PATCH, projection_dim=HIDDEN),
        },
        text_config={
            "model_type": "mistral",
            **llama_text(
                padded_vocab(tokenizer),
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
                sliding_window=None,
            ),
        },
        image_token_index=ids["image"],
        image_grid_pinpoints=PINPOINTS,
        image_seq_length=(LLAVA_IMAGE // LLAVA_PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": LLAVA_IMAGE},
        crop_size={"height": LLAVA_IMAGE, "width": LLAVA_IMAGE},
        image_grid_pinpoints=PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=templates.LLAVA_NEXT,
    )
    return model, processor


def build_llava_onevision() -> tuple[Any, Any]:
    """LLaVA-OneVision: SigLIP tower (no CLS) + Qwen2 text model, ChatML prompts."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = make_fast_tokenizer(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={"image_token": "<image>", "video_token": "<video>"},
    )
    ids = token_ids(
        tokenizer, image="<image>", video="<video>", eos="<|im_end|>", pad="<|endoftext|>"
    )
    num_tokens = (LLAVA_IMAGE // LLAVA_PATCH) ** 2
    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "vision_use_head": False,
            **clip_vision(LLAVA_IMAGE, LLAVA_PATCH),
        },
        text_config={
            "model_type": "qwen2",
            **llama_text(padded_vocab(tokenizer), eos_token_id=ids["eos"], pad_token_id=ids["pad"]),
        },
        image_token_index=ids["image"],
        video_token_index=ids["video"],
        image_grid_pinpoints=[[32, 32], *PINPOINTS],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    size = {"height": LLAVA_IMAGE, "width": LLAVA_IMAGE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=[[32, 32], *PINPOINTS]
        ),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=num_tokens,
        vision_feature_select_strategy="full",
        chat_template=templates.CHATML_IMAGE,
    )
    return model, processor
