"""Tiny PaliGemma, Mllama, BLIP-2, InstructBLIP and InternVL builders."""

from __future__ import annotations

from typing import Any

from . import templates
from .common import HEADS, HIDDEN, INTERMEDIATE, LAYERS, clip_vision, llama_text, token_ids
from .tokenizer import make_fast_tokenizer, padded_vocab

IMAGE = 32
PATCH = 8
NUM_QUERY_TOKENS = 4  # BLIP-2 / InstructBLIP: Q-Former queries = image tokens in the prompt


def build_paligemma() -> tuple[Any, Any]:
    """PaliGemma: SigLIP tower + Gemma; prompts are prefixes ("caption en"), no chat template."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tokenizer = make_fast_tokenizer(
        ("<pad>", "<eos>", "<bos>", "<unk>", "<image>"),
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
    )
    num_tokens = (IMAGE // PATCH) ** 2
    image_processor = SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    image_processor.image_seq_length = num_tokens  # the processor reads it from here
    # The processor adds PaliGemma's 1024 <locNNNN> and 128 <segNNN> tokens to the tokenizer,
    # so the model's vocabulary is sized only after the processor exists.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    ids = token_ids(tokenizer, image="<image>", bos="<bos>", eos="<eos>", pad="<pad>")
    vocab = padded_vocab(tokenizer)
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "vision_use_head": False,  # PaliGemma reads patch features, not SigLIP's pooled head
            **clip_vision(IMAGE, PATCH, projection_dim=HIDDEN),
        },
        text_config={
            "model_type": "gemma",
            **llama_text(
                vocab,
                head_dim=HIDDEN // HEADS,
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
                tie_word_embeddings=True,
            ),
        },
        image_token_index=ids["image"],
        vocab_size=vocab,
        projection_dim=HIDDEN,
        hidden_size=HIDDEN,
        tie_word_embeddings=True,
    )
    return PaliGemmaForConditionalGeneration(config), processor


def build_mllama() -> tuple[Any, Any]:
    """Llama-3.2-Vision: tiled vision encoder feeding cross-attention layers of the text model."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
    )

    specials = (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|finetune_right_pad_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    )
    tokenizer = make_fast_tokenizer(
        specials,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        extra={"image_token": "<|image|>"},
        # No automatic BOS: the chat template writes it, and the processor adds it to plain
        # prompts (after leading <|image|> tokens), so a tokenizer BOS would double it.
    )
    ids = token_ids(
        tokenizer,
        image="<|image|>",
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
    )
    config = MllamaConfig(
        vision_config={
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_global_layers": 1,
            "attention_heads": HEADS,
            "image_size": IMAGE,
            "patch_size": PATCH,
            "max_num_tiles": 4,
            "intermediate_layers_indices": [0],
            # last hidden state + one intermediate layer, concatenated: 2 * HIDDEN features
            "vision_output_dim": 2 * HIDDEN,
        },
        text_config=llama_text(
            padded_vocab(tokenizer),
            num_hidden_layers=3,
            cross_attention_layers=[1],
            bos_token_id=ids["bos"],
            eos_token_id=ids["eos"],
            pad_token_id=ids["pad"],
        ),
        image_token_index=ids["image"],
    )
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessor(
            size={"height": IMAGE, "width": IMAGE}, max_image_tiles=4
        ),
        tokenizer=tokenizer,
        chat_template=templates.MLLAMA,
    )
    model = MllamaForConditionalGeneration(config)
    _open_zero_gates(model)
    return model, processor


def _open_zero_gates(model: Any) -> None:
    """Set tanh-gates that initialise to 0 (cross-attention, tile embeddings) to 1.

    Real checkpoints have learned, non-zero gates; a closed gate would hide the image from a
    random model entirely.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if (
                name.rsplit(".", 1)[-1].endswith("gate")
                and param.numel() == 1
                and param.item() == 0
            ):
                param.fill_(1.0)


def _qformer(vocab_size: int | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "encoder_hidden_size": HIDDEN,
        "cross_attention_frequency": 1,
        "max_position_embeddings": 128,
    }
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    return cfg


def _blip_vision() -> dict[str, Any]:
    # BLIP-2's default vision initializer_range is 1e-10 (all-zero weights); use a normal one.
    return clip_vision(IMAGE, PATCH, initializer_range=0.02)


# BLIP processors only accept `<image>` as a token they add themselves (an AddedToken): a
# tokenizer that already declares `image_token` as a string breaks their __call__ in
# transformers 5.x, so these tokenizers carry <image> as a plain special token only.


def build_blip2() -> tuple[Any, Any]:
    """BLIP-2 (OPT flavour): Q-Former queries become the image tokens; plain-text prompts."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    # OPT uses </s> as both BOS and EOS and prepends it to every text.
    tokenizer = make_fast_tokenizer(
        ("<pad>", "</s>", "<unk>", "<image>"),
        bos="</s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
    )
    ids = token_ids(tokenizer, image="<image>", eos="</s>", pad="<pad>")
    config = Blip2Config(
        vision_config=_blip_vision(),
        qformer_config=_qformer(),
        text_config={
            "model_type": "opt",
            "vocab_size": padded_vocab(tokenizer),
            "hidden_size": HIDDEN,
            "word_embed_proj_dim": HIDDEN,
            "ffn_dim": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": 512,
            "bos_token_id": ids["eos"],
            "eos_token_id": ids["eos"],
            "pad_token_id": ids["pad"],
        },
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=ids["image"],
        image_text_hidden_size=HIDDEN,
    )
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
        tokenizer=tokenizer,
        num_query_tokens=NUM_QUERY_TOKENS,
    )
    return Blip2ForConditionalGeneration(config), processor


def build_instructblip() -> tuple[Any, Any]:
    """InstructBLIP (Vicuna flavour): the instruction also feeds the Q-Former's own tokenizer."""
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    tokenizer = make_fast_tokenizer(
        ("<unk>", "<s>", "</s>", "<pad>", "<image>"),
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
    )
    # Stands in for the BERT tokenizer real checkpoints use for the Q-Former input.
    qformer_tokenizer = make_fast_tokenizer(
        ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        pad="[PAD]",
        unk="[UNK]",
        bos="[CLS]",
        eos="[SEP]",
        add_bos=True,
        padding_side="right",
        model_max_length=128,
    )
    ids = token_ids(tokenizer, image="<image>", bos="<s>", eos="</s>", pad="<pad>")
    config = InstructBlipConfig(
        vision_config=_blip_vision(),
        qformer_config=_qformer(padded_vocab(qformer_tokenizer)),
        text_config={
            "model_type": "llama",
            **llama_text(
                padded_vocab(tokenizer),
                bos_token_id=ids["bos"],
                eos_token_id=ids["eos"],
                pad_token_id=ids["pad"],
            ),
        },
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=ids["image"],
    )
    processor = InstructBlipProcessor(
        image_processor=BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=NUM_QUERY_TOKENS,
    )
    return InstructBlipForConditionalGeneration(config), processor


def build_internvl() -> tuple[Any, Any]:
    """InternVL3: InternViT tiles (pixel-shuffled 2x) + Qwen2 text model, ChatML prompts."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tokenizer = make_fast_tokenizer(
        (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<img>",
            "</img>",
            "<IMG_CONTEXT>",
            "<video>",
        ),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    ids = token_ids(tokenizer, image="<IMG_CONTEXT>", eos="<|im_end|>", pad="<|endoftext|>")
    seq = (IMAGE // PATCH) ** 2 // 4  # downsample_ratio 0.5 merges 2x2 patches
    config = InternVLConfig(
        vision_config={
            **clip_vision(IMAGE, PATCH),
            "image_size": [IMAGE, IMAGE],
            "patch_size": [PATCH, PATCH],
        },
        text_config={
            "model_type": "qwen2",
            **llama_text(padded_vocab(tokenizer), eos_token_id=ids["eos"], pad_token_id=ids["pad"]),
        },
        image_token_id=ids["image"],
        image_seq_length=seq,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    size = {"height": IMAGE, "width": IMAGE}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=size, crop_to_patches=True, min_patches=1, max_patches=4
        ),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=seq,
        chat_template=templates.INTERNVL,
    )
    return InternVLForConditionalGeneration(config), processor
