"""Tiny random-weight stand-ins for every text family of the catalog, and Llama Guard 2.

Each builder writes a Hugging Face layout folder: a config of the real architecture
(2 layers, hidden size 64), random weights from `engines.prepare.SEED`, and a
byte-level BPE tokenizer with the real model's special tokens. Instruct and chat models
carry a chat template shaped like the real one (same markers, same refusals of roles
the real template refuses); base models carry none, so chat on them is refused with
`chat_template_missing`. Llama 3.1 uses rope type llama3; the guard's template renders
the Llama Guard 2 task prompt with its S1..S11 categories.

The outputs are garbage: test shapes, types, lengths and determinism, never words.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.prepare import save_model, train_tokenizer

log = logging.getLogger(__name__)

VERSION = 2

# Common to every tiny config: small, and weights wide enough that greedy decoding
# wanders instead of repeating one token.
_SMALL: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "initializer_range": 0.2,
}

_RAISE_ALTERNATE = (
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
)

# Llama 3 Instruct: header markers around each role, <|eot_id|> after each turn.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

# Mistral Instruct v0.1: an optional system message goes before the first user turn;
# user and assistant must alternate; [INST] is plain text in its tokenizer.
MISTRAL_V1_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}"
    "{{ bos_token }}{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" + _RAISE_ALTERNATE +
    "{% endif %}{% if message['role'] == 'user' %}"
    "{% if loop.first and system is defined %} [INST] {{ system }}\n\n{{ message['content'] }}"
    " [/INST]{% else %} [INST] {{ message['content'] }} [/INST]{% endif %}"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the "
    "exception of an initial optional system message!') }}{% endif %}{% endfor %}"
)

# Mistral Instruct v0.3: [INST] and [/INST] are control tokens; the system message
# joins the last user turn.
MISTRAL_V3_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set turns = messages[1:] %}{% else %}{% set turns = messages %}{% endif %}"
    "{{ bos_token }}{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" + _RAISE_ALTERNATE +
    "{% endif %}{% if message['role'] == 'user' %}"
    "{% if loop.last and system is defined %}[INST] {{ system }}\n\n{{ message['content'] }}"
    "[/INST]{% else %}[INST] {{ message['content'] }}[/INST]{% endif %}"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported, with the "
    "exception of an initial optional system message!') }}{% endif %}{% endfor %}"
)

# Gemma instruct: turns between <start_of_turn> and <end_of_turn>; the assistant is
# called "model"; there is no system role.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" + _RAISE_ALTERNATE +
    "{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# Llama Guard 2's policy: its codes and category names, as its prompt lists them.
GUARD_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Specialized Advice",
    "S6": "Privacy",
    "S7": "Intellectual Property",
    "S8": "Indiscriminate Weapons",
    "S9": "Hate",
    "S10": "Self-Harm",
    "S11": "Sexual Content",
}

# Llama Guard 2: the whole conversation becomes one [INST] task prompt that asks for a
# verdict on the last turn: "safe", or "unsafe" and a line of violated codes.
GUARD_TEMPLATE = (
    "{% if messages | length % 2 == 0 %}{% set role = 'Agent' %}"
    "{% else %}{% set role = 'User' %}{% endif %}"
    "{{ bos_token }}[INST] Task: Check if there is unsafe content in '{{ role }}' messages in "
    "conversations according our safety policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    + "".join(f"{code}: {name}. \n" for code, name in GUARD_CATEGORIES.items())
    + "<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{% set who = 'User' %}"
    "{% else %}{% set who = 'Agent' %}{% endif %}"
    "{{ who }}: {{ message['content'] | trim }}\n\n{% endfor %}"
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST {{ role }} message "
    "in the above conversation:\n - First line must read 'safe' or 'unsafe'.\n - If unsafe, "
    "a second line must include a comma-separated list of violated categories. [/INST]"
)

LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>",
]


def _generation(tokenizer: Any, eos: list[str] | None = None) -> Any:
    from transformers import GenerationConfig

    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in eos or [tokenizer.eos_token]]
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )


def _ids(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _prepend_bos(tokenizer: Any) -> None:
    """Every encoded text starts with bos, also where bos is eos (OPT's "</s>")."""
    from tokenizers import processors

    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tokenizer.bos_token_id)],
    )


def _llama(path: Path, *, template: str | None, rope: dict[str, Any],
           context: int = 512) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = "<|eot_id|>" if template else "<|end_of_text|>"
    tokenizer = train_tokenizer(LLAMA3_SPECIALS, bos="<|begin_of_text|>", eos=eos, pad=None,
                                chat_template=template)
    tokenizer.model_max_length = context
    config = LlamaConfig(**_SMALL, **_ids(tokenizer), num_key_value_heads=2,
                         max_position_embeddings=context, rope_parameters=rope,
                         tie_word_embeddings=False)
    generation = _generation(tokenizer, ["<|end_of_text|>", "<|eot_id|>"])
    return save_model(path, tokenizer, lambda: LlamaForCausalLM(config), generation, None)


_LLAMA3_ROPE = {"rope_type": "default", "rope_theta": 500000.0}


def build_llama3_instruct(path: Path) -> Path:
    return _llama(path, template=LLAMA3_TEMPLATE, rope=_LLAMA3_ROPE)


def build_llama31_base(path: Path) -> Path:
    # Llama 3.1's long-context RoPE: low frequencies stretched by `factor` beyond
    # the original context (scaled down here with everything else).
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}
    return _llama(path, template=None, rope=rope)


def build_llama_guard2(path: Path) -> Path:
    # The guard prompt is long (~1 kB of policy text); this tokenizer knows few merges.
    return _llama(path, template=GUARD_TEMPLATE, rope=_LLAMA3_ROPE, context=2048)


def _mistral(path: Path, *, template: str, control: list[str],
             sliding_window: int | None, rope_theta: float) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = train_tokenizer(["<unk>", "<s>", "</s>", *control], bos="<s>", eos="</s>",
                                pad=None, chat_template=template)
    config = MistralConfig(**_SMALL, **_ids(tokenizer), num_key_value_heads=2,
                           max_position_embeddings=512, sliding_window=sliding_window,
                           rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                           tie_word_embeddings=False)
    return save_model(path, tokenizer, lambda: MistralForCausalLM(config),
                      _generation(tokenizer), None)


def build_mistral_v01(path: Path) -> Path:
    return _mistral(path, template=MISTRAL_V1_TEMPLATE, control=[],
                    sliding_window=256, rope_theta=10000.0)


def build_mistral_v03(path: Path) -> Path:
    return _mistral(path, template=MISTRAL_V3_TEMPLATE, control=["[INST]", "[/INST]"],
                    sliding_window=None, rope_theta=1000000.0)


def _gemma(path: Path, *, template: str | None, kv_heads: int) -> Path:
    from transformers import GemmaConfig, GemmaForCausalLM

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tokenizer = train_tokenizer(specials, bos="<bos>", eos="<eos>", pad="<pad>",
                                chat_template=template)
    config = GemmaConfig(**_SMALL, **_ids(tokenizer), num_key_value_heads=kv_heads,
                         head_dim=16, hidden_act="gelu_pytorch_tanh",
                         max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    eos = ["<eos>", "<end_of_turn>"] if template else None
    return save_model(path, tokenizer, lambda: GemmaForCausalLM(config),
                      _generation(tokenizer, eos), None)


def build_gemma_7b(path: Path) -> Path:
    return _gemma(path, template=None, kv_heads=4)  # multi-head attention, like 7b


def build_gemma_2b_it(path: Path) -> Path:
    return _gemma(path, template=GEMMA_TEMPLATE, kv_heads=1)  # multi-query, like 2b


def build_opt(path: Path) -> Path:
    from transformers import OPTConfig, OPTForCausalLM

    tokenizer = train_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], bos="</s>", eos="</s>",
                                pad="<pad>", chat_template=None)
    _prepend_bos(tokenizer)  # OPT starts every text with "</s>"
    config = OPTConfig(**_ids(tokenizer), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                       num_attention_heads=4, word_embed_proj_dim=64,
                       max_position_embeddings=512, init_std=0.2)
    return save_model(path, tokenizer, lambda: OPTForCausalLM(config),
                      _generation(tokenizer), None)


def build_gpt2(path: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_tokenizer(["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>",
                                pad=None, chat_template=None)
    config = GPT2Config(**_ids(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=4,
                        initializer_range=0.2)
    return save_model(path, tokenizer, lambda: GPT2LMHeadModel(config),
                      _generation(tokenizer), None)


def build_phi2(path: Path) -> Path:
    from transformers import PhiConfig, PhiForCausalLM

    tokenizer = train_tokenizer(["<|endoftext|>"], bos="<|endoftext|>", eos="<|endoftext|>",
                                pad=None, chat_template=None)
    config = PhiConfig(**_SMALL, **_ids(tokenizer), max_position_embeddings=512,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.4})
    return save_model(path, tokenizer, lambda: PhiForCausalLM(config),
                      _generation(tokenizer), None)


def build_mamba_codestral(path: Path) -> Path:
    from transformers import Mamba2Config, Mamba2ForCausalLM

    tokenizer = train_tokenizer(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], bos="<s>",
                                eos="</s>", pad=None, chat_template=None)
    # Mamba2 needs num_heads * head_dim == expand * hidden_size
    config = Mamba2Config(**_ids(tokenizer), hidden_size=64, expand=2, num_heads=8,
                          head_dim=16, n_groups=1, state_size=16, conv_kernel=4,
                          chunk_size=64, num_hidden_layers=2, initializer_range=0.2,
                          tie_word_embeddings=False)
    return save_model(path, tokenizer, lambda: Mamba2ForCausalLM(config),
                      _generation(tokenizer), None)


def build_olmoe(path: Path) -> Path:
    from transformers import OlmoeConfig, OlmoeForCausalLM

    tokenizer = train_tokenizer(["<|endoftext|>", "<|padding|>"], bos="<|endoftext|>",
                                eos="<|endoftext|>", pad="<|padding|>", chat_template=None)
    config = OlmoeConfig(**{**_SMALL, "intermediate_size": 32}, **_ids(tokenizer),
                         num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
                         max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return save_model(path, tokenizer, lambda: OlmoeForCausalLM(config),
                      _generation(tokenizer), None)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": build_llama3_instruct,
    "meta-llama/Meta-Llama-3.1-8B": build_llama31_base,
    "meta-llama/Meta-Llama-Guard-2-8B": build_llama_guard2,
    "mistralai/Mistral-7B-Instruct-v0.3": build_mistral_v03,
    "mistralai/Mistral-7B-Instruct-v0.1": build_mistral_v01,
    "google/gemma-7b": build_gemma_7b,
    "google/gemma-2b-it": build_gemma_2b_it,
    "facebook/opt-125m": build_opt,
    "openai-community/gpt2-large": build_gpt2,
    "microsoft/phi-2": build_phi2,
    "mistralai/Mamba-Codestral-7B-v0.1": build_mamba_codestral,
    "allenai/OLMoE-1B-7B-0924": build_olmoe,
}
