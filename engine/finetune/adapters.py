"""Loading a base for training, attaching what is trained, and saving / applying adapters.

An adapter folder is peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``)
plus ``visiondesk_adapter.json`` with the base model, the recipe and which modules must stay
unquantised when the base is loaded in 4-bit (the projector an adapter carries cannot sit on a
4-bit layer). The projector-only recipe has no LoRA at all: its folder holds the projector's
weights (``projector.safetensors``) and is applied by loading them over the base.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from engine.errors import BadInput, ModelNotFound

NOTES = "visiondesk_adapter.json"
PROJECTOR_FILE = "projector.safetensors"


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def load_base(
    model_path: str,
    *,
    kind: str,
    quant: str,
    device: str,
    dtype: str,
    skip_modules: list[str],
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """The base model and its processor, 4-bit where asked with vision/projector kept whole."""
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    local = Path(model_path).expanduser()
    if local.is_absolute() and not local.is_dir():  # else transformers calls it a bad repo id
        raise ModelNotFound(
            f"The base model {model_path} is gone (deleted or moved); the adapter was trained "
            "on it and needs it. Put it back, or import it again at the same place."
        )
    from transformers.utils import logging as hf_logging

    from engine.backends.local_hf import quantization_config

    hf_logging.disable_progress_bar()
    compute = torch_dtype(dtype)
    quant_config = quantization_config(quant, compute)
    if quant_config is not None and skip_modules:
        quant_config.llm_int8_skip_modules = list(skip_modules)
    auto = AutoModel if kind == "contrastive" else AutoModelForImageTextToText
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    model = auto.from_pretrained(
        model_path,
        dtype=compute,
        quantization_config=quant_config,
        device_map={"": 0} if device == "cuda" else {"": device},
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    if device == "cpu" and quant == "nf4":
        # bitsandbytes repacks 4-bit weights for its CPU kernel the first time an evaluation
        # forward runs, and the repacked kernel rounds differently: a run resumed without that
        # first evaluation would drift from one that never stopped. Keep the one layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    return model, processor


def attach_trainable(
    model: Any,
    *,
    regex: str,
    modules_to_save: list[str],
    rank: int,
    alpha: int,
    dropout: float,
    gradient_checkpointing: bool,
) -> Any:
    """peft LoRA on ``regex`` (+ fully trained ``modules_to_save``), or the projector alone."""
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        text_config = model.config.get_text_config()
        for config in (
            (model.config, text_config) if text_config is not model.config else (model.config,)
        ):
            config.use_cache = False  # a KV cache is useless in training and clashes with it
    if not regex:  # projector only: no LoRA, the projector itself is trained
        modules = dict(model.named_modules())
        for name in modules_to_save:
            for param in modules[name].parameters():
                param.data = param.data.float()  # trained in float32, saved as such
                param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=regex,
        modules_to_save=list(modules_to_save) or None,
        bias="none",
    )
    return get_peft_model(model, config)


def trainable_tensors(model: Any) -> dict[str, Any]:
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def save_adapter(model: Any, out_dir: Path, notes: dict[str, Any]) -> Path:
    """Write the adapter folder atomically (temporary folder, then rename)."""
    from safetensors.torch import save_file

    tmp = out_dir.parent / f".tmp-{out_dir.name}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    try:
        if notes.get("adapter_kind") == "projector":
            tensors = {
                k: v.detach().cpu().contiguous() for k, v in trainable_tensors(model).items()
            }
            save_file(tensors, str(tmp / PROJECTOR_FILE))
        else:
            model.save_pretrained(str(tmp))
        notes = {**notes, "saved_at": time.time()}
        (tmp / NOTES).write_text(json.dumps(notes, indent=2), encoding="utf-8")
        old = out_dir.parent / f".old-{out_dir.name}-{uuid.uuid4().hex[:6]}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_notes(adapter_dir: str | Path) -> dict[str, Any]:
    folder = Path(adapter_dir).expanduser()
    if not folder.is_dir():
        raise BadInput(f"Adapter folder not found: {folder}")
    file = folder / NOTES
    if file.is_file():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except ValueError:
            return {}
    if (folder / "adapter_config.json").is_file():
        return {"adapter_kind": "peft"}  # an adapter trained elsewhere
    raise BadInput(f"{folder} is not an adapter folder (no adapter_config.json).")


def skip_modules_for(adapter_dir: str | Path) -> list[str]:
    """Modules to keep unquantised under a 4-bit base so the adapter's weights fit on them: those
    its run kept whole, and those it saved whole (peft's ``modules_to_save``, e.g. a projector
    trained in full), which an adapter trained in full precision or elsewhere does not list."""
    skip = list(read_notes(adapter_dir).get("skip_modules", []))
    peft_config = Path(adapter_dir).expanduser() / "adapter_config.json"
    if peft_config.is_file():
        try:
            saved = json.loads(peft_config.read_text(encoding="utf-8")).get("modules_to_save")
        except ValueError:
            saved = None
        # peft names them from the base model's root or by their last part alone: as patterns
        # for transformers (matched from the start of a module's full name), both fit.
        skip += [rf"(?:.*\.)?{re.escape(name)}" for name in saved or [] if name not in skip]
    return skip


def apply_adapter(model: Any, adapter_dir: str | Path) -> Any:
    """The base with the adapter applied, ready to generate (peft, or a projector's weights)."""
    notes = read_notes(adapter_dir)
    folder = Path(adapter_dir).expanduser()
    if notes.get("adapter_kind") == "projector":
        from safetensors.torch import load_file

        tensors = load_file(str(folder / PROJECTOR_FILE))
        params = dict(model.named_parameters())
        unknown = [name for name in tensors if name not in params]
        if unknown:
            raise BadInput(f"The adapter in {folder} does not fit this model ({unknown[0]}).")
        for name, value in tensors.items():
            params[name].data = value.to(params[name].device, params[name].dtype)
        model.eval()
        return model
    from peft import PeftModel

    try:
        adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise BadInput(f"The adapter in {folder} does not fit this model: {exc}") from exc
    adapted.eval()
    return adapted
