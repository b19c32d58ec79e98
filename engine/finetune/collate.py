"""Correct supervision: loss on the assistant's tokens and its end-of-turn token, nothing else.

Each example is rendered with the processor's own chat template and tokenised by the real
processor (so image tokens are counted exactly as the model will see them). The assistant spans
are found by rendering the conversation up to each answer with ``add_generation_prompt=True``:
the tokens of that prefix are the prompt, the tokens from there to the end of the answer are
trained. Inside a span, image tokens and anything after the last end-of-turn token (Qwen's
newline after ``<|im_end|>``) are masked; padding is masked by position, never by token id, so a
tokenizer whose pad token *is* its EOS still learns to stop. Nothing is ever truncated: an
example longer than the limit is reported and left out by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import BadInput, Unsupported
from engine.finetune.data import Example, Turn
from engine.protocol import finetune as pf

IGNORE = -100
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_utterance>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
IMAGE_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "image_token")


@dataclass
class Supervised:
    """One example as the model sees it."""

    text: str  # the rendered conversation (an EOS appended if the template writes none)
    images: list[str]
    input_ids: list[int]
    labels: list[int]
    image_tokens: int
    warnings: list[str] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


class Supervisor:
    """Builds input ids and labels for examples with one model's processor and chat template."""

    def __init__(
        self,
        processor: Any,
        model_config: Any,
        stop_ids: set[int],
        image_max_pixels: int | None = None,
    ) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        template = getattr(processor, "chat_template", None) or getattr(
            self.tokenizer, "chat_template", None
        )
        if not template:
            raise Unsupported(
                "This model has no chat template, so its answers cannot be told apart from its "
                "prompts; fine-tuning needs an instruction (chat) model."
            )
        self.tokenizer.padding_side = "right"  # labels are placed by position, left to right
        self.stop_ids = set(stop_ids) | self._end_of_turn_ids()
        self.image_ids = _image_token_ids(processor, model_config)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.budget = apply_image_budget(processor, image_max_pixels)
        self._cache: dict[int, Supervised] = {}

    # --- public ----------------------------------------------------------------------------------
    def encode(self, example: Example, key: int | None = None) -> Supervised:
        """Input ids and labels of one example (cached under ``key``)."""
        if key is not None and key in self._cache:
            return self._cache[key]
        images = [_load(path) for path in example.images]
        text = self.render(example.turns)
        supervised = self._supervise(example, text, images)
        if not self._trains_stop(supervised) and self.tokenizer.eos_token:
            # The template ends answers with nothing the model could stop on: add the EOS.
            supervised = self._supervise(example, text, images, self.tokenizer.eos_token)
        if not self._trains_stop(supervised):
            raise Unsupported(
                "The chat template ends answers without an end-of-turn token and the tokenizer "
                "has no EOS token, so a fine-tuned model would never learn to stop."
            )
        if key is not None:
            self._cache[key] = supervised
        return supervised

    def collate(self, examples: list[Example], keys: list[int] | None = None) -> dict[str, Any]:
        """One padded batch: the processor's tensors plus ``labels`` (masked by position)."""
        import torch

        supervised = [
            self.encode(example, None if keys is None else keys[i])
            for i, example in enumerate(examples)
        ]
        # Images nested per example: SmolVLM and Mllama count them per prompt.
        images = [[_load(path) for path in item.images] for item in supervised]
        batch = self.processor(
            text=[item.text for item in supervised],
            images=images if any(images) else None,
            padding=True,
            return_tensors="pt",
        )
        ids = batch["input_ids"]
        labels = torch.full_like(ids, IGNORE)
        for row, item in enumerate(supervised):
            if ids[row, : item.length].tolist() != item.input_ids:
                raise BadInput(
                    "The processor tokenised an example differently inside a batch; "
                    "train with a batch size of 1."
                )
            labels[row, : item.length] = torch.tensor(item.labels)
        batch["labels"] = labels
        return dict(batch)

    def token_view(self, example: Example) -> list[pf.TokenSpan]:
        """The "what will be trained" view: runs of prompt, image and trained tokens."""
        item = self.encode(example)
        spans: list[pf.TokenSpan] = []
        for token, label in zip(item.input_ids, item.labels, strict=True):
            kind: Any = (
                "image" if token in self.image_ids else "trained" if label != IGNORE else "prompt"
            )
            text = self.tokenizer.decode([token])
            if spans and spans[-1].kind == kind:
                spans[-1].text += "" if kind == "image" else text
                spans[-1].count += 1
            else:
                spans.append(pf.TokenSpan(text="" if kind == "image" else text, kind=kind))
        for span in spans:
            if span.kind == "image":
                span.text = f"[image: {span.count} tokens]"
        return spans

    def warnings(self) -> list[str]:
        """Tokenisation warnings of the examples encoded so far (one per example)."""
        return [item.warnings[0] for item in self._cache.values() if item.warnings]

    def render(self, turns: list[Turn], add_generation_prompt: bool = False) -> str:
        conversation = [_hf_turn(turn) for turn in turns]
        return str(
            self.processor.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    # --- internals ------------------------------------------------------------------------------
    def _tokens(self, text: str, images: list[Any]) -> list[int]:
        encoded = self.processor(text=[text], images=images or None, return_tensors=None)
        ids = encoded["input_ids"]
        return list(ids[0] if ids and isinstance(ids[0], list) else ids)

    def _supervise(
        self, example: Example, rendered: str, images: list[Any], appended: str = ""
    ) -> Supervised:
        text = rendered + appended
        ids = self._tokens(text, images)
        labels = [IGNORE] * len(ids)
        warnings: list[str] = []
        seen_images = 0
        for index, turn in enumerate(example.turns):
            if turn.role != "assistant":
                seen_images += len(turn.images)
                continue
            prompt = self.render(example.turns[:index], add_generation_prompt=True)
            upto = self.render(example.turns[: index + 1])
            if not (text.startswith(upto) and upto.startswith(prompt)):
                raise Unsupported(
                    "This model's chat template rewrites earlier turns when a new one is added, "
                    "so the answer tokens cannot be located reliably."
                )
            before = images[:seen_images]
            prompt_ids = self._tokens(prompt, before)
            start = _common_prefix(ids, prompt_ids)
            end = len(ids) if upto == rendered else _common_prefix(ids, self._tokens(upto, before))
            if start < len(prompt_ids) - 1:
                warnings.append(f"{example.source}: the prompt's last tokens merge with the answer")
            end = self._trim_after_stop(ids, start, end)
            for position in range(start, end):
                if ids[position] not in self.image_ids:
                    labels[position] = ids[position]
        image_tokens = sum(1 for token in ids if token in self.image_ids)
        return Supervised(text, example.images, ids, labels, image_tokens, warnings)

    def _trim_after_stop(self, ids: list[int], start: int, end: int) -> int:
        """End the span at its last end-of-turn token: what follows is template, not answer."""
        for position in range(end - 1, start - 1, -1):
            if ids[position] in self.stop_ids:
                return position + 1
        return end

    def _trains_stop(self, item: Supervised) -> bool:
        trained = [
            token
            for token, label in zip(item.input_ids, item.labels, strict=True)
            if label != IGNORE
        ]
        return bool(trained) and trained[-1] in self.stop_ids

    def _end_of_turn_ids(self) -> set[int]:
        found = set()
        vocab = self.tokenizer.get_vocab()
        for token in END_OF_TURN_TOKENS:
            if token in vocab:
                found.add(int(vocab[token]))
        if self.tokenizer.eos_token_id is not None:
            found.add(int(self.tokenizer.eos_token_id))
        return found


def apply_image_budget(processor: Any, max_pixels: int | None) -> int | None:
    """Cap dynamic-resolution processors (Qwen2-VL family) at ``max_pixels``; None elsewhere."""
    image_processor = getattr(processor, "image_processor", None)
    if max_pixels is None or image_processor is None or not hasattr(image_processor, "merge_size"):
        return None
    size = dict(image_processor.size)
    size["longest_edge"] = int(max_pixels)  # Qwen's "longest_edge" is a pixel count
    image_processor.size = size
    return int(max_pixels)


def stop_token_ids(model_path: str, config: Any, tokenizer: Any) -> set[int]:
    """The ids generation stops on: the generation config's EOS ids and the tokenizer's EOS."""
    ids: set[int] = set()
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        eos = getattr(config.get_text_config(), "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _image_token_ids(processor: Any, config: Any) -> set[int]:
    tokenizer = getattr(processor, "tokenizer", processor)
    found: set[int] = set()
    for holder in (config, processor, tokenizer):
        for attr in IMAGE_TOKEN_ATTRS:
            value = getattr(holder, attr, None)
            if isinstance(value, int) and value >= 0:
                found.add(value)
            elif isinstance(value, str):
                token_id = tokenizer.convert_tokens_to_ids(value)
                if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                    found.add(token_id)
    return found


def _hf_turn(turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "image"} for _ in turn.images]
    content.append({"type": "text", "text": turn.text})
    return {"role": turn.role, "content": content}


def _common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _load(path: str) -> Any:
    from engine.documents.images import load_image

    return load_image(path)
