"""Count the tokens an image costs, with the model's real processor on a blank image of a size.

The count is what the processor really puts in ``input_ids`` (the image-token id, counted), so
AnyRes tiling, Qwen's pixel budget and Idefics3's splitting are measured, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadInput, Unsupported
from engine.models.families import quirks_for
from engine.protocol import ChatMessage
from engine.protocol.base import MAX_IMAGE_PIXELS

QUESTION = "Describe this image."


@dataclass(frozen=True)
class ImageCost:
    image_tokens_per_image: int  # occurrences of the image token for one image
    prompt_tokens: int  # the whole one-turn prompt with all images
    cross_attention_tokens: int  # vision states seen by cross-attention layers, all images
    vision_patches_per_image: int  # patches the vision tower encodes for one image


def load_processor(path: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise Unsupported(f"The processor files of {path.name} cannot be read: {exc}") from exc


def image_token_id(processor: Any, config: Any) -> int | None:
    """The id the processor uses for image placeholders, from the processor first, then config."""
    tokenizer = getattr(processor, "tokenizer", None)
    value = getattr(processor, "image_token_id", None)
    if isinstance(value, int):
        return value
    token = getattr(processor, "image_token", None)
    if tokenizer is not None and isinstance(token, str):
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            return found
    for holder in (config, getattr(config, "text_config", None)):
        for name in ("image_token_id", "image_token_index"):
            value = getattr(holder, name, None)
            if isinstance(value, int):
                return value
    return None


def prompt_for(processor: Any, model_type: str, images: int) -> str:
    """The same one-turn prompt the local backend builds for a question about ``images`` images."""
    from engine.backends.local_hf import _hf_message, _plain_prompt

    quirks = quirks_for(model_type)
    message = ChatMessage(role="user", text=QUESTION, images=["image"] * images)
    tokenizer = getattr(processor, "tokenizer", processor)
    template = getattr(processor, "chat_template", None) or getattr(
        tokenizer, "chat_template", None
    )
    if quirks.prompt_format == "chat_template" and template:
        return str(
            processor.apply_chat_template(
                [_hf_message(message)], add_generation_prompt=True, tokenize=False
            )
        )
    if quirks.prompt_format == "prefix":
        return message.text
    return _plain_prompt([message])


def measure(
    processor: Any,
    config: Any,
    model_type: str,
    width: int,
    height: int,
    images: int,
    embedding: bool = False,
) -> ImageCost:
    """Run the real processor on ``images`` blank images of ``width`` x ``height``.

    An embedding model has no image tokens in a prompt; its cost per image is the patches its
    vision tower encodes."""
    from PIL import Image

    if width < 1 or height < 1 or images < 0:
        raise BadInput("The image size must be at least 1x1 and the image count not negative.")
    if width * height > MAX_IMAGE_PIXELS:  # a blank picture of that size is made below
        raise BadInput(
            f"An image of {width}×{height} pixels is more than the "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit of any picture VisionDesk reads."
        )
    token_id = image_token_id(processor, config)
    one = _run(processor, model_type, Image.new("RGB", (width, height), (127, 127, 127)), 1)
    per_image = int((one["input_ids"][0] == token_id).sum()) if token_id is not None else 0
    if images == 0:
        prompt_tokens = len(_text_only_ids(processor, model_type))
    elif images == 1:
        prompt_tokens = int(one["input_ids"].shape[-1])
    else:
        blank = Image.new("RGB", (width, height), (127, 127, 127))
        prompt_tokens = int(_run(processor, model_type, blank, images)["input_ids"].shape[-1])
    patches = _vision_patches(config, one, per_image)
    return ImageCost(
        image_tokens_per_image=patches if embedding else per_image,
        prompt_tokens=prompt_tokens,
        cross_attention_tokens=_cross_attention_tokens(config, one) * images,
        vision_patches_per_image=patches,
    )


def _run(processor: Any, model_type: str, image: Any, count: int) -> Any:
    quirks = quirks_for(model_type)
    prompt = prompt_for(processor, model_type, count)
    # Processors disagree on how several images of one prompt are passed: flat or nested.
    layouts = [[image] * count] if count == 1 else [[image] * count, [[image] * count]]
    error: Exception | None = None
    for images in layouts:
        try:
            return processor(
                text=[prompt], images=images, return_tensors="pt", **quirks.processor_kwargs
            )
        except (ValueError, TypeError) as exc:
            error = exc
    raise BadInput(f"The model's processor rejected a {image.size} image: {error}") from error


def _text_only_ids(processor: Any, model_type: str) -> list[int]:
    tokenizer = getattr(processor, "tokenizer", processor)
    prompt = prompt_for(processor, model_type, 0)
    return list(tokenizer(prompt)["input_ids"])


def _cross_attention_tokens(config: Any, encoded: Any) -> int:
    """mllama: each cross-attention layer attends over every tile's patches (+ class token)."""
    if getattr(config, "model_type", "") != "mllama":
        return 0
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    pixel_values = encoded.get("pixel_values")
    tiles = int(pixel_values.shape[2]) if pixel_values is not None else vision.max_num_tiles
    return tiles * patches


def _vision_patches(config: Any, encoded: Any, image_tokens: int) -> int:
    """Patches the vision tower sees for one image: a bound for its activations."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return image_tokens
    grid = encoded.get("image_grid_thw")
    if grid is not None:  # Qwen2-VL family: patches before the 2x2 merge
        return int(grid[0].prod())
    pixel_values = encoded.get("pixel_values")
    patch = getattr(vision, "patch_size", None)
    if pixel_values is None or not isinstance(patch, int) or pixel_values.dim() < 4:
        return image_tokens
    height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    # Every view (tile, crop, global image) of the one image the processor saw.
    views = max(1, int(pixel_values.numel() // (pixel_values.shape[-3] * height * width)))
    return views * (height // patch) * (width // patch)
