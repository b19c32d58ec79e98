"""A byte-level BPE tokenizer trained on the spot from a built-in corpus (no Hub, no files)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Short, varied English so BPE learns common words; byte-level fallback covers everything else.
CORPUS: tuple[str, ...] = (
    "A photo of a cat sitting on a red sofa next to a window.",
    "The dog runs across the green field and catches a yellow ball.",
    "What is in this image? Describe the picture in detail, please.",
    "There are two people walking on the beach at sunset.",
    "The chart shows the sales of the company over the last five years.",
    "Read the text in the document and answer the question below.",
    "This is a table with three columns: name, date and amount.",
    "The invoice total is 42 dollars and 17 cents, due on March 3rd.",
    "A small white boat is floating on a calm blue lake under the mountains.",
    "Hello! How can I help you today? I can look at images and documents.",
    "The user asked a question about the image and the assistant answered it.",
    "Count the number of apples on the table: one, two, three, four, five.",
    "The street is busy with cars, buses and bicycles in the morning.",
    "She is reading a book in the library while it rains outside.",
    "The graph has an x axis for time and a y axis for temperature.",
    "Summarize the main points of the page in a few short sentences.",
    "The kitchen has a wooden table, four chairs and a large window.",
    "A child is drawing a house, a tree and the sun with colored pencils.",
    "Yes, the image contains a bird. No, there is no person in it.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000, and symbols like ( ) [ ] { } : ; , .",
    "The answer is left, right, up, down, above, below, inside or outside.",
    "Please list the objects you can see, then explain what is happening.",
    "The screenshot shows a settings window with buttons and a text field.",
    "USER: Hi there. ASSISTANT: Hello! You are a helpful assistant; the system, the user and "
    "the assistant take turns in a chat.",
)

# Kept below 512 learned tokens so families' vocabularies stay small and padding to 64 is cheap.
BASE_VOCAB_SIZE = 448


def train_tokenizer_object(special_tokens: Sequence[str], vocab_size: int = BASE_VOCAB_SIZE) -> Any:
    """Train a `tokenizers.Tokenizer` (byte-level BPE); special tokens get ids 0..len-1."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(special_tokens),
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    return tok


def make_fast_tokenizer(
    special_tokens: Sequence[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    unk: str | None = None,
    extra: dict[str, str] | None = None,
    add_bos: bool = False,
    add_eos: bool = False,
    padding_side: str = "left",
    model_max_length: int = 4096,
) -> Any:
    """Wrap a freshly trained tokenizer in `PreTrainedTokenizerFast` with the given roles.

    `extra` maps attribute names (e.g. ``image_token``) to tokens: transformers 5 stores them as
    `extra_special_tokens` so processors can read ``tokenizer.image_token``.
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_tokenizer_object(special_tokens)
    prefix = [bos] if add_bos and bos is not None else []
    suffix = [eos] if add_eos and eos is not None else []
    if prefix or suffix:
        # Llama-style BOS and CLIP/SigLIP-style EOS are added by the tokenizer itself, as in
        # the real checkpoints, so processors see the same ids they would in production.
        single = " ".join([*prefix, "$A", *suffix])
        pair = " ".join([*prefix, "$A", *suffix, *prefix, "$B", *suffix])
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=single,
                    pair=pair,
                    special_tokens=[
                        (t, tok.token_to_id(t)) for t in dict.fromkeys(prefix + suffix)
                    ],
                ),
            ]
        )
    kwargs: dict[str, Any] = {
        "tokenizer_object": tok,
        "padding_side": padding_side,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    for role, value in (
        ("bos_token", bos),
        ("eos_token", eos),
        ("pad_token", pad),
        ("unk_token", unk),
    ):
        if value is not None:
            kwargs[role] = value
    if extra:
        kwargs["extra_special_tokens"] = dict(extra)
    return PreTrainedTokenizerFast(**kwargs)


def padded_vocab(tokenizer: Any, multiple: int = 64) -> int:
    """Vocabulary size for the model: the tokenizer's length rounded up so linears stay NF4-friendly."""
    n = len(tokenizer)
    return ((n + multiple - 1) // multiple) * multiple
