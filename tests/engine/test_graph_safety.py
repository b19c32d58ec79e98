"""What a CUDA graph captures must read no value on the host, and its inputs from fixed places.

A value read on the host is a synchronisation, which stream capture refuses: the decode step or
the follow-up's piece would then stay eager (``graph_error``/``chunk_error``), several times
slower. And a graph replays the addresses it was captured with: a tensor that a new turn or
conversation puts somewhere else would be read stale, silently (Qwen2-VL's ``rope_deltas`` once
was). The GPU tests (``test_static_decode_cuda.py``) capture two families; here the same
forwards of every family that decodes in the engine's loop run on the CPU under both watches:
the one-token step, a follow-up's piece, a first turn's bucketed prefill, and the image
encoder where it is captured.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine import protocol as p
from engine.backends.local_hf import LocalHFBackend
from engine.models.families import quirks_for
from engine.runtime import LoadSpec
from tests.engine.test_static_decode import GENERATIVE, answer, two_turns

# Python-level reads of a value; operators that read one, or whose output shape depends on values.
PYTHON_READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}
VALUE_READS = {"item", "_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim"}


def _where() -> str:
    """The innermost frame of transformers or the engine: who read the value."""
    frames = [
        frame
        for frame in traceback.extract_stack()
        if ("transformers" in frame.filename or "/engine/" in frame.filename)
        and "/tests/" not in frame.filename
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class _Functions(TorchFunctionMode):
    def __init__(self, found: list[tuple[str, str]]) -> None:
        super().__init__()
        self.found = found

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__name__", "") in PYTHON_READS:
            self.found.append((func.__name__, _where()))
        return func(*args, **(kwargs or {}))


class _Operators(TorchDispatchMode):
    def __init__(self, found: list[tuple[str, str]]) -> None:
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.__name__.split(".")[0] in VALUE_READS:
            self.found.append((func.__name__, _where()))
        return func(*args, **(kwargs or {}))


class HostReads:
    """Records, within a ``with`` block, each read of a tensor's value by the host."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []
        self._modes = (_Functions(self.found), _Operators(self.found))

    def __enter__(self) -> HostReads:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


class ExternalInputs(TorchDispatchMode):
    """Records, within a ``with`` block, where each tensor that an operator reads but no
    operator of the block made lives (storage address, offset, shape, dtype): what a captured
    graph reads from outside itself (weights, cache, the decoder's buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.places: set[tuple[Any, ...]] = set()
        self._made: dict[int, torch.Tensor] = {}  # kept alive, so that ids stay unique

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        for tensor in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self._made:
                storage = tensor.untyped_storage().data_ptr()
                self.places.add(
                    (storage, tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
                )
        result = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(result)[0]:
            if isinstance(tensor, torch.Tensor):
                self._made[id(tensor)] = tensor
        return result


def captured_forwards(decoder: Any) -> list[tuple[str, Any]]:
    """What a GPU captures: the one-token step, a follow-up's piece, each first-turn prefill
    length seen (written from the cache's start, as a first turn is), and each picture shape's
    encoder."""
    forwards = [("decode step", decoder._forward), ("piece", decoder._chunk_forward)]
    for key, prefill in decoder._prefills.items():
        forwards.append((f"prefill of {key[0]}", _from_the_start(decoder, prefill.forward)))
    for key, vision in decoder._visions.items():
        forwards.append((f"image encoder for {key[1]}", vision.forward))
    return forwards


def _from_the_start(decoder: Any, forward: Any) -> Any:
    def run() -> Any:
        decoder.cache.reset()  # device writes only: the cache's length goes back to 0
        return forward()

    return run


def in_the_loop(tiny_model, family: str) -> LocalHFBackend:
    """The family's tiny model decoding in the engine's loop: follow-ups in pieces of 8, first
    turns padded to 128 tokens (one bucket for every picture these tests use), pictures through
    the encoder's buffers where its call allows."""
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "none", "cpu"))
    if not quirks_for(backend.resolved.model_type).static_decode:
        pytest.skip(f"{family} keeps generate()")
    backend.set_static_decode(True, chunk=8, prefill_bucket=128, capture_vision=True)
    return backend


def first_turn_twice(backend: LocalHFBackend, messages: list[p.ChatMessage]) -> None:
    """Answer a first turn as two new conversations: a fresh cache is written eagerly, the
    second one runs the bucketed prefill."""
    for _ in range(2):
        backend.prefix_cache.clear()
        answer(backend, messages)


def in_conversation(tiny_model, picture: str, family: str) -> LocalHFBackend:
    """``in_the_loop``, one turn about the picture answered (its cache and, for the Qwen2-VL
    family, its images' rotary offset in place)."""
    backend = in_the_loop(tiny_model, family)
    first_turn, _ = two_turns(picture)
    first_turn_twice(backend, first_turn)
    return backend


@pytest.mark.parametrize("family", GENERATIVE)
def test_the_captured_forwards_read_nothing_on_the_host(family, tiny_model, picture) -> None:
    backend = in_conversation(tiny_model, picture, family)
    decoder = backend.decoder
    assert decoder is not None and decoder.chunk == 8
    forwards = captured_forwards(decoder)
    # Every family's first turn is bucketed but PaliGemma's, whose prefix attends both ways;
    # the encoder is captured where its call takes one tile's pixels alone.
    kind = backend.resolved.model_type
    assert len(forwards) == 2 + (kind != "paligemma") + (kind in ("llava", "paligemma"))
    for name, forward in forwards:
        with torch.inference_mode(), HostReads() as reads:
            forward()
        assert reads.found == [], f"{family}'s {name} reads values on the host: {reads.found}"


def test_the_watch_sees_a_host_read(tiny_model, picture) -> None:
    """The watch itself: the cache's length read as a number, and transformers' own mask for
    several new tokens (which reads the cache's length: why the pieces build their own)."""
    decoder = in_conversation(tiny_model, picture, "llava").decoder
    assert decoder is not None
    with torch.inference_mode(), HostReads() as reads:
        decoder.length()
    assert reads.found and all("static_decode.py" in where for _, where in reads.found)
    with torch.inference_mode(), HostReads() as reads:
        decoder.model(input_ids=decoder._chunk_ids, cache=decoder.cache, use_cache=True)
    assert any("masking_utils.py" in where for _, where in reads.found)


@pytest.mark.parametrize("family", GENERATIVE)
def test_the_captured_forwards_read_the_same_places_in_every_conversation(
    family, tiny_model, tmp_path
) -> None:
    backend = in_the_loop(tiny_model, family)
    decoder = backend.decoder
    assert decoder is not None
    places = []
    # Pictures of other shapes: other image offsets for the Qwen2-VL family's positions.
    for size, colour in (((224, 56), (200, 40, 40)), ((56, 168), (40, 40, 200))):
        picture = tmp_path / f"{size[0]}x{size[1]}.png"
        Image.new("RGB", size, colour).save(picture)
        first_turn_twice(
            backend, [p.ChatMessage(role="user", text="What is this?", images=[str(picture)])]
        )
        read = {}
        for name, forward in captured_forwards(decoder):
            with torch.inference_mode(), ExternalInputs() as inputs:
                forward()
            read[name] = inputs.places
        places.append(read)
    assert decoder.capacity and places[0] == places[1]
