"""Jinja chat templates for the tiny models, written to match each family's real checkpoints."""

from __future__ import annotations

# Shared macro: message content may be a plain string or a list of typed parts (transformers format).
_PARTS = (
    "{%- macro parts(content, image, text_suffix='') -%}"
    "{%- if content is string -%}{{ content }}{{ text_suffix }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}{{ image }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{{ text_suffix }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

# LLaVA-1.5 (llava-hf): "USER: <image>\nWhat is this? ASSISTANT:"; images come before the text.
LLAVA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{{ part['text'] }}{%- endfor -%}{%- endif -%}{{ ' ' }}"
    "{%- else -%}{{ message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] + ' ' }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] + ' ' }}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def chatml(image: str, default_system: str | None = None) -> str:
    """ChatML (``<|im_start|>role\n...<|im_end|>``) with `image` standing for each image part."""
    image_literal = image.replace("\n", "\\n")  # emitted inside a Jinja string literal
    system = ""
    if default_system is not None:
        system = (
            "{%- if loop.first and message['role'] != 'system' -%}"
            f"{{{{ '<|im_start|>system\\n{default_system}<|im_end|>\\n' }}}}"
            "{%- endif -%}"
        )
    body = [
        _PARTS,
        "{%- for message in messages -%}",
        system,
        "{{ '<|im_start|>' + message['role'] + '\\n' }}",
        f"{{{{ parts(message['content'], '{image_literal}') }}}}",
        "{{ '<|im_end|>\\n' }}",
        "{%- endfor -%}",
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}",
    ]
    return "".join(body)


# Qwen2-VL / Qwen2.5-VL: default system prompt and vision_start/pad/end markers.
QWEN2_VL = chatml("<|vision_start|><|image_pad|><|vision_end|>", "You are a helpful assistant.")
# LLaVA-OneVision (Qwen2 text model): <image> on its own line.
CHATML_IMAGE = chatml("<image>\n")
# InternVL3: the processor expands <IMG_CONTEXT> into <img><IMG_CONTEXT>*N</img>.
INTERNVL = chatml("<IMG_CONTEXT>\n", "You are a helpful assistant.")

# LLaVA-NeXT (Mistral-7B flavour): "[INST] <image>\nWhat is shown? [/INST]".
LLAVA_NEXT = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '[INST] ' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}{{ ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- if message['content'] is string -%}{{ ' ' + message['content'] }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{{ ' ' + part['text'] }}{%- endfor -%}{%- endif -%}{{ eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# Idefics2 / Idefics3 / SmolVLM: "User:<image>Hi<end_of_utterance>\nAssistant:".
IDEFICS = (
    _PARTS + "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ message['role'] | capitalize }}"
    "{%- if message['content'] is not string and message['content'][0]['type'] == 'image' -%}"
    "{{ ':' }}{%- else -%}{{ ': ' }}{%- endif -%}"
    "{{ parts(message['content'], '<image>') }}"
    "{{ '<end_of_utterance>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}"
)

# Llama-3.2-Vision (Mllama): header ids around roles, <|image|> before the text.
MLLAMA = (
    _PARTS + "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ parts(message['content'], '<|image|>') }}"
    "{{ '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif -%}"
)
