"""Shared sizes and config snippets for the tiny models (all NF4-friendly: multiples of 64)."""

from __future__ import annotations

from typing import Any

# bitsandbytes NF4 on the CPU quantises in blocks of 64, so every quantised Linear must have
# in/out features that are multiples of 64; these sizes keep each model
# at 0.2-0.4 M parameters (about 1-1.6 MB of float32 safetensors).
HIDDEN = 64
INTERMEDIATE = 128
HEADS = 2  # head_dim 32: big enough for rope variants (mrope sections, llama3 scaling)
LAYERS = 2


def llama_text(vocab_size: int, **overrides: Any) -> dict[str, Any]:
    """A two-layer Llama-style text config (also fits Mistral/Qwen2/Gemma text configs)."""
    cfg: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": False,
    }
    cfg.update(overrides)
    return cfg


def clip_vision(image_size: int, patch_size: int, **overrides: Any) -> dict[str, Any]:
    """A two-layer CLIP/SigLIP-style vision config with few patches."""
    cfg: dict[str, Any] = {
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    cfg.update(overrides)
    return cfg


def token_ids(tokenizer: Any, **roles: str) -> dict[str, int]:
    """Map names to token ids, failing loudly if a special token did not make it into the vocab."""
    out: dict[str, int] = {}
    for name, token in roles.items():
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise ValueError(f"token {token!r} missing from the tiny tokenizer")
        out[name] = int(tid)
    return out
