"""Tiny CLIP and SigLIP dual encoders (image/text embeddings, loaded with AutoModel)."""

from __future__ import annotations

from typing import Any

from .common import HIDDEN, clip_vision, llama_text, token_ids
from .tokenizer import make_fast_tokenizer, padded_vocab

IMAGE = 32
PATCH = 8
TEXT_LEN = 64  # SigLIP pads every text to this length; CLIP's 77 is rounded down to match


def _text(vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    cfg = llama_text(vocab_size, max_position_embeddings=TEXT_LEN)
    for key in ("num_key_value_heads", "tie_word_embeddings"):
        cfg.pop(key)  # not text-encoder options
    cfg.update(ids)
    return cfg


def build_clip() -> tuple[Any, Any]:
    """CLIP: text pooled at the EOS token, vision pooled at CLS; both projected to 64 dims."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = make_fast_tokenizer(
        ("<|startoftext|>", "<|endoftext|>"),
        bos="<|startoftext|>",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        unk="<|endoftext|>",
        add_bos=True,
        add_eos=True,
        padding_side="right",
        model_max_length=TEXT_LEN,
    )
    ids = token_ids(tokenizer, bos_token_id="<|startoftext|>", eos_token_id="<|endoftext|>")
    config = CLIPConfig(
        text_config=_text(padded_vocab(tokenizer), {**ids, "pad_token_id": ids["eos_token_id"]}),
        vision_config=clip_vision(IMAGE, PATCH),
        projection_dim=HIDDEN,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}
        ),
        tokenizer=tokenizer,
    )
    return CLIPModel(config), processor


def build_siglip() -> tuple[Any, Any]:
    """SigLIP: sigmoid-loss dual encoder; texts are padded to TEXT_LEN and pooled at the end."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    tokenizer = make_fast_tokenizer(
        ("<pad>", "</s>", "<unk>"),
        eos="</s>",
        pad="</s>",
        unk="<unk>",
        add_eos=True,
        padding_side="right",
        model_max_length=TEXT_LEN,
    )
    # SigLIP texts have no BOS; the config default (49406) would point outside the vocab.
    ids = {"bos_token_id": None, **token_ids(tokenizer, eos_token_id="</s>", pad_token_id="</s>")}
    config = SiglipConfig(
        text_config={**_text(padded_vocab(tokenizer), ids), "projection_size": HIDDEN},
        vision_config=clip_vision(IMAGE, PATCH),
    )
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE}),
        tokenizer=tokenizer,
    )
    return SiglipModel(config), processor
