"""A small byte-level BPE tokenizer for the tiny world, with Qwen's special tokens and chat template.

Trained with `tokenizers` on text from the world (descriptions, questions, thoughts, the pipeline's
prompt templates, any extra texts), so every common world word is a single token; byte-level, so any
text still round-trips. The special tokens and the chat template follow Qwen2-VL's, so the tiny
models are driven exactly like the real ones (same processor, same vLLM code path):

- special: `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos), `<|vision_start|>`,
  `<|vision_end|>`, `<|image_pad|>`, `<|video_pad|>`;
- added, not special (they survive decoding with `skip_special_tokens`): `<think>`, `</think>`,
  `<answer>`, `</answer>`.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
ADDED_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2-VL's conversation layout, written out here: a default system turn when the conversation has
# none, `<|im_start|>role\n...<|im_end|>\n` per turn, an image part as
# `<|vision_start|><|image_pad|><|vision_end|>` (the processor repeats the pad once per image token),
# and `<|im_start|>assistant\n` for add_generation_prompt. Content is a string or a list of parts.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- elif part['type'] in ['image', 'image_url'] -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] in ['video', 'video_url'] -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The same layout as `CHAT_TEMPLATE`, in plain Python (the reference the tests compare to)."""
    out = []
    if messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            parts = []
            for p in content:
                if p["type"] == "text":
                    parts.append(p["text"])
                elif p["type"] in ("image", "image_url"):
                    parts.append("<|vision_start|><|image_pad|><|vision_end|>")
                elif p["type"] in ("video", "video_url"):
                    parts.append("<|vision_start|><|video_pad|><|vision_end|>")
            content = "".join(parts)
        out.append(f"<|im_start|>{m['role']}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def train_bpe(texts: Iterable[str], vocab_size: int = 3000, min_frequency: int = 2) -> Tokenizer:
    """Byte-level BPE (GPT-2 pre-tokenisation, no prefix space) with the special/added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(list(ADDED_TOKENS))
    return tok


def build_tokenizer(texts: Iterable[str], vocab_size: int = 3000, model_max_length: int = 2048):
    """Train on `texts` and wrap as a `PreTrainedTokenizerFast` with eos, pad and the chat template."""
    from transformers import AddedToken, PreTrainedTokenizerFast

    tok = train_bpe(texts, vocab_size=vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)]})
    fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return fast
