"""The GPU's control flow of the engine's loop, run on the CPU with a stand-in for CUDA graphs.

``test_static_decode_cuda.py`` captures real graphs but needs a GPU. Here ``_Captured`` is
replaced by a stand-in with a graph's two properties that the loop's code must respect: a
capture runs nothing (the cache's length is as before it), and a replay rewrites the *same*
output tensors (anything kept from an earlier replay changes under the holder's feet). Every
capture, warm-up and replay path of the step, the follow-up's pieces, the first turn's prefill
and the image encoder then runs as on a GPU, and the answers must be ``generate``'s.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image
from torch.utils._pytree import tree_leaves

from engine import protocol as p
from engine.backends import static_decode
from engine.backends.local_hf import LocalHFBackend
from engine.runtime import LoadSpec
from tests.engine.test_static_decode import answer


class StandInGraph(static_decode._Captured):
    """``_Captured`` with the capture and replay of a CUDA graph emulated on the CPU."""

    decoder: Any = None  # whose cache a capture must leave as it was

    def __call__(self) -> Any:
        if self.graph is not None:  # replay: into the outputs of the capture
            fresh = self.forward()
            for kept, new in zip(tree_leaves(self.output), tree_leaves(fresh), strict=True):
                if torch.is_tensor(kept):
                    kept.copy_(new)
            return self.output
        result = static_decode._copied(self.forward())  # the warm-up
        layers = self.decoder.cache.layers if self.decoder.cache is not None else []
        lengths = [layer.cumulative_length.clone() for layer in layers]
        self.output = self.forward()  # the capture, which runs nothing on a GPU...
        for layer, length in zip(layers, lengths, strict=True):
            layer.cumulative_length.copy_(length)  # ...so the cache's length is as it was
        self.graph = True
        return result


@pytest.fixture
def graphs_on(monkeypatch):
    monkeypatch.setattr(static_decode, "_Captured", StandInGraph)

    def turn_on(backend: LocalHFBackend) -> Any:
        backend.set_static_decode(
            True,
            chunk=static_decode.CHUNK,
            prefill_bucket=static_decode.PREFILL_BUCKET,
            capture_vision=True,
        )
        decoder = backend.decoder
        assert decoder is not None
        decoder.use_graphs = True  # as on CUDA, with the stand-in graphs
        StandInGraph.decoder = decoder
        return decoder

    return turn_on


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma"])
def test_captured_paths_answer_like_generate_when_replays_rewrite_their_outputs(
    family, tiny_model, tmp_path, graphs_on
) -> None:
    backend = LocalHFBackend.load(LoadSpec(str(tiny_model(family)), "nf4", "cpu"))
    paths = []
    for index, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        path = tmp_path / f"{index}.png"
        image = Image.new("RGB", (64, 48), colour)
        image.paste((240, 240, 240), (5, 5, 30, 20))
        image.save(path)
        paths.append(str(path))
    questions = ["What is this?", "Describe it.", "What is in the picture?", "What is this?"]
    turns = []
    for path, question in zip([*paths, paths[0]], questions, strict=True):
        first = [p.ChatMessage(role="user", text=question, images=[path])]
        follow_up = [
            *first,
            p.ChatMessage(role="assistant", text="A box."),
            p.ChatMessage(role="user", text="And its colours?"),
        ]
        turns += [first, follow_up]
    expected = []
    for messages in turns:
        backend.prefix_cache.clear()
        expected.append(answer(backend, messages).token_ids)
    backend.forget_images()

    decoder = graphs_on(backend)
    backend.warm_up()  # captures as at load: the step, a first turn's prefill, a follow-up
    got = []
    for index, messages in enumerate(turns):
        if index % 2 == 0:
            backend.prefix_cache.clear()  # a new conversation
        got.append(answer(backend, messages).token_ids)
    assert got == expected  # the last conversation's picture comes from the feature cache
    errors = (decoder.graph_error, decoder.chunk_error, decoder.prefill_error, decoder.vision_error)
    assert errors == (None, None, None, None)
    assert decoder.steps_replayed > 0
    if family == "paligemma":  # its prefix attends both ways: its prefill and turns stay eager
        assert decoder.prefills_replayed == 0
    else:
        assert decoder.prefills_replayed == 4 and decoder.chunks_replayed == 4
    # The encoder takes one tile's pixels alone in LLaVA and PaliGemma (Qwen2-VL reads its grid).
    assert decoder.visions_replayed == (0 if family == "qwen2_vl" else 3)
