"""Writes test/fixtures/chat/templates.json: real chat templates of the MoE families and their
renders by Python jinja2, configured as transformers' apply_chat_template configures it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, raise_exception,
tojson with ensure_ascii=False). test/chat.test.ts renders the same cases with
@huggingface/jinja and asserts the exact text.

Templates (the `chat_template` strings of the models' tokenizer_config.json):
  mixtral    mistralai/Mixtral-8x7B-Instruct-v0.1
  qwen2_moe  Qwen/Qwen1.5-MoE-A2.7B-Chat (ChatML with a default system turn)
  phimoe     microsoft/Phi-3.5-MoE-instruct (the Phi-3.5 template)
  olmoe      allenai/OLMoE-1B-7B-0924-Instruct (the Tulu template)
  default    moe-ts DEFAULT_CHAT_TEMPLATE (src/infer/chat.ts), copied here
bos/eos tokens are the models' where known; they only enter as strings.

Run: python3 tools/reference/make_chat_fixtures.py   (needs jinja2 ≥ 3.1)
"""
import json
import os

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES = {
    "mixtral": {
        "bos": "<s>",
        "eos": "</s>",
        "template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    },
    "qwen2_moe": {
        "bos": "",
        "eos": "<|im_end|>",
        "template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    },
    "phimoe": {
        "bos": "<s>",
        "eos": "<|endoftext|>",
        "template": "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
    },
    "olmoe": {
        "bos": "<|endoftext|>",
        "eos": "<|endoftext|>",
        "template": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}",
    },
    "default": {
        "bos": "",
        "eos": "<|endoftext|>",
        "template": "{%- for message in messages %}\n    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n",
    },
}

CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "Hello"}],
    "system_first": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a whale."},
    ],
    "multi_turn": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?\nAnswer briefly."},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "hi"},
    ],
    "unicode": [{"role": "user", "content": "naïve café 的 😀 — \"quotes\" {{ not jinja }}"}],
    "bad_alternation": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def main():
    cases = []
    for tname, t in TEMPLATES.items():
        compiled = compile_template(t["template"])
        for cname, messages in CONVERSATIONS.items():
            for agp in (True, False):
                case = {"template": tname, "conversation": cname, "add_generation_prompt": agp}
                try:
                    case["expected"] = compiled.render(messages=messages, add_generation_prompt=agp, bos_token=t["bos"], eos_token=t["eos"])
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = {
        "generator": "tools/reference/make_chat_fixtures.py (jinja2 %s)" % jinja2.__version__,
        "templates": TEMPLATES,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    path = os.path.join(root, "test", "fixtures", "chat", "templates.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s: %d cases" % (path, len(cases)))


if __name__ == "__main__":
    main()
