"""A picture seen before is not encoded again, and the answer is the one a fresh run gives."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from engine import protocol as p
from engine.backends.feature_cache import FeatureCache
from engine.backends.local_hf import LocalHFBackend
from engine.runtime import LoadSpec
from engine.testing import AUTO_CLASS, FAMILIES
from tests.engine.test_prefix_cache import VisionCalls

GENERATIVE = [f for f in FAMILIES if AUTO_CLASS[f] == "AutoModelForImageTextToText"]
GREEDY = p.Sampling(max_new_tokens=8)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[str, str, str]:
    folder = tmp_path_factory.mktemp("features")
    first, copy, other = folder / "a.png", folder / "copy-of-a.png", folder / "b.png"
    image = Image.new("RGB", (64, 48), (200, 120, 40))
    image.paste((20, 60, 200), (10, 10, 40, 30))
    image.save(first)
    image.save(copy)
    Image.new("RGB", (64, 48), (10, 200, 10)).save(other)
    return str(first), str(copy), str(other)


def ask(backend: LocalHFBackend, text: str, image: str) -> Any:
    backend.prefix_cache.clear()  # a new conversation: only the feature cache can help
    return backend.chat(
        [p.ChatMessage(role="user", text=text, images=[image])],
        GREEDY,
        on_text=lambda _t: None,
        cancelled=lambda: False,
    )


@pytest.mark.parametrize("family", GENERATIVE)
def test_the_same_picture_in_a_new_conversation_is_not_encoded_again(
    family, tiny_model, pictures
) -> None:
    if family in ("blip2", "instructblip", "idefics", "mllama"):
        pytest.skip(f"{family} does not encode images through the wrapped get_image_features")
    first, copy, other = pictures
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "nf4", "cpu"))
    vision = VisionCalls(backend.model)
    ask(backend, "What is this?", first)
    encoded = vision.count
    assert encoded >= 1 and backend.feature_cache.misses >= 1

    # Same content under another name, another question: the features come from the cache.
    cached = ask(backend, "Which colours?", copy)
    assert vision.count == encoded, "the picture was encoded again"
    assert backend.feature_cache.hits >= 1

    backend.feature_cache.clear()
    fresh = ask(backend, "Which colours?", copy)
    assert vision.count > encoded
    assert fresh.token_ids == cached.token_ids

    before = vision.count
    ask(backend, "Which colours?", other)
    assert vision.count > before, "a different picture must be encoded"


def test_the_budget_keeps_the_most_recent_features() -> None:
    import torch

    cache = FeatureCache(budget_bytes=3 * 4 * 100)
    calls: list[int] = []

    def encode(pixel_values: Any) -> Any:
        calls.append(1)
        return torch.zeros(100) + pixel_values.sum()

    wrapped = cache._wrap(encode)
    pixels = torch.ones(2, 3)
    for name in ("a", "b", "c", "d"):
        with cache.images((name,)):
            wrapped(pixels)
    assert len(calls) == 4 and cache.total_bytes() == 3 * 400
    with cache.images(("d",)):
        wrapped(pixels)
    assert len(calls) == 4  # "d" is kept
    with cache.images(("a",)):
        wrapped(pixels)
    assert len(calls) == 5  # "a" was the oldest and made room
    wrapped(pixels)  # no images named: never cached
    assert len(calls) == 6


@pytest.mark.parametrize("family", GENERATIVE)
def test_the_image_processor_runs_once_per_picture_and_answers_do_not_change(
    family, tiny_model, pictures
) -> None:
    first, copy, other = pictures
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "nf4", "cpu"))
    image_processor = backend.processor.image_processor
    original_class = type(image_processor).__mro__[1]
    assert isinstance(image_processor, original_class)  # still the family's own class
    answers = [
        ask(backend, "Which colours?", picture).token_ids for picture in (first, copy, first)
    ]
    assert backend.pixel_cache.misses == 1 and backend.pixel_cache.hits == 2
    assert answers[0] == answers[1] == answers[2]  # whatever the processor pops, nothing leaks
    ask(backend, "Which colours?", other)
    assert backend.pixel_cache.misses == 2
    backend.pixel_cache.clear()
    backend.feature_cache.clear()
    assert ask(backend, "Which colours?", first).token_ids == answers[0]


def test_a_pictures_hash_is_read_once_per_version_of_the_file(tmp_path, monkeypatch) -> None:
    from engine.backends import prefix_cache

    reads: list[str] = []
    digest = prefix_cache._file_digest

    def counted(file: Any) -> str:
        reads.append(file.name)
        return digest(file)

    monkeypatch.setattr(prefix_cache, "_file_digest", counted)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 120, 40)).save(photo)
    first = prefix_cache.image_key(str(photo))
    assert prefix_cache.image_key(str(photo)) == first and reads == ["photo.png"]

    Image.new("RGB", (64, 48), (10, 200, 10)).save(photo)  # edited in place: a new version
    edited = prefix_cache.image_key(str(photo))
    assert edited != first and edited == digest(photo) and reads == ["photo.png"] * 2


@pytest.mark.parametrize(("name", "message"), [("gone.png", "not found"), (".", "folder")])
def test_a_missing_picture_or_a_folder_is_a_clear_error_before_any_work(
    name, message, tiny_model, tmp_path
) -> None:
    from engine.errors import BadInput

    backend = LocalHFBackend.load(LoadSpec(str(tiny_model("llava")), "nf4", "cpu"))
    question = [p.ChatMessage(role="user", text="What is this?", images=[str(tmp_path / name)])]
    with pytest.raises(BadInput, match=message):
        backend.chat(question, GREEDY, on_text=lambda _t: None, cancelled=lambda: False)
