"""Makes the golden Hugging Face fixtures of crates/marlin-models/tests/hf_tiny.rs and
crates/marlin-engine/tests/hf_tiny.rs: four tiny random checkpoints, one per family we load
from Hugging Face folders, each with the answers transformers gives for it.

    python -m venv /tmp/gguf-venv
    /tmp/gguf-venv/bin/pip install torch==2.15.0 transformers==5.23.0 tokenizers==0.23.3 \
        safetensors==0.8.0
    /tmp/gguf-venv/bin/python scripts/make_tiny_checkpoints.py

(it runs on the CPU in a few seconds; another torch build or machine may move a logit in its
last float32 place, far below the tests' budgets). Writes
crates/marlin-models/tests/fixtures/tiny/{llama,mistral,qwen2,qwen3}/, each a folder as
`save_pretrained` writes it (config.json, generation_config.json, safetensors, tokenizer.json,
tokenizer_config.json) plus reference.json; llama and mistral are then rewritten into the layout
of transformers 4.x (see legacy_layout). Every random draw comes from a fixed seed: running it
again rewrites the same bytes (check with `git status`).

Each family takes a different path through a loader and the model (docs/testing.md):
- llama: float32 weights, untied lm_head, grouped kv heads, Llama 3.1 rope scaling with an
  original context short enough that all three of its frequency bands occur.
- mistral: bfloat16, sliding window 8 (the longer prompts see past it).
- qwen2: float16, tied embeddings, random (non-zero) q/k/v biases.
- qwen3: bfloat16, two safetensors shards with an index, head_dim != hidden / heads, random
  q_norm / k_norm weights.

reference.json holds, for prompts of 1, 6, 19 and 37 token ids: the float32 logits of the last
token over the whole vocabulary, computed by transformers in float32 (eager attention) from the
folder as saved, so the 16-bit rounding of the weights is on both sides; and the greedy
continuation of 8 tokens (end-of-sequence tokens do not stop it; `eos_token_ids` says which
they are), with the smallest gap between the first and second logit along the way (how much
numerical noise the continuation tolerates). And tokenizer answers: the ids of a few strings
(`encode` with its default special-token handling) and a chat rendered by
`apply_chat_template` with its ids.
"""

import json
import os
import re
import shutil
import tempfile

import safetensors
import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen3Config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "marlin-models", "tests", "fixtures", "tiny")
SEED = 6  # the first seed whose greedy steps all clear MIN_MARGIN
VOCAB = 300
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PROMPT_LENGTHS = [1, 6, 19, 37]
# Embedding std: large enough that logits spread out (std ~1..2.5), small enough beside what the
# layers add that tied heads do not just repeat the last token.
EMBED_STD = 0.3
# A greedy step closer than this to a tie could flip on float32 noise: pick another SEED.
MIN_MARGIN = 0.005
NEW_TOKENS = 8

# What the tokenizer learns its merges from: prose, code, numbers and some non-ASCII text,
# so the strings below split into merged tokens and single bytes alike.
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.
A model reads the tokens of the prompt, then writes the next token, and the next.
def forward(self, x):
    return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
for i in range(10):
\tprint(i, i * i)
Numbers: 3.14159, 2.71828, 1024, 65536, 2024-06-11.
Hello world! Hello there. Hello again, world.
Ünïcödé: héllo wörld, naïve café, smörgåsbord, 東京, ✓ done.
"""

# Qwen2's split (a lookahead needs a backtracking regex engine), then bytes to characters.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML, with a default system turn when the conversation has none (as SmolLM2's template).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a tiny test model.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TOKENIZER_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two spaces,\ta tab,\n\nnewlines\r\n and trailing spaces   ",
    "héllo wörld ✓",
    "東京 🦀 naïve",
    "x = 12345 + 3.14",
    "<|im_start|>user\nhi<|im_end|>",
    "",
]
CHAT = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is 2 + 2?"},
]


def make_tokenizer():
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TRAINING_TEXT] * 4, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE,
        model_max_length=512, clean_up_tokenization_spaces=False)


COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=2, pad_token_id=0)


def configs():
    """(name, config, storage dtype, save_pretrained keyword arguments)."""
    # head_dim 16 and theta 10000: wavelengths 2*pi*10000^(i/8) = 6.3, 20, 63, 199, ...; with
    # an original context of 64, high_freq_factor 4 and low_freq_factor 1 keep those under 16,
    # divide those over 64 by the factor, and blend the two between (20 and 63).
    llama = LlamaConfig(**COMMON, tie_word_embeddings=False, rope_theta=10000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64})
    mistral = MistralConfig(**COMMON, head_dim=16, sliding_window=8, tie_word_embeddings=False,
                            rope_theta=10000.0)
    qwen2 = Qwen2Config(**COMMON, tie_word_embeddings=True, rope_theta=1000000.0)
    # head_dim 32 while hidden / heads is 16: q is 128 wide, k and v 64.
    qwen3 = Qwen3Config(**COMMON, head_dim=32, tie_word_embeddings=True, rope_theta=1000000.0)
    return [
        ("llama", llama, torch.float32, {}),
        ("mistral", mistral, torch.bfloat16, {}),
        ("qwen2", qwen2, torch.float16, {}),
        ("qwen3", qwen3, torch.bfloat16, {"max_shard_size": "150KB"}),
    ]


def randomize(model, gen):
    """Weights large enough that logits spread out (a wrong rope or a lost bias shows)."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                # Around 1, each channel different: a norm applied per wrong axis shows.
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                # transformers starts biases at 0, which would test nothing.
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif name == "model.embed_tokens.weight":
                # Small beside what the layers add: with tied embeddings, a large embedding of
                # the last token would dominate its own logit and every continuation would
                # repeat it.
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def greedy_check(model, ids, continuation):
    """Re-derives the greedy continuation from whole-sequence passes (no cache) and returns the
    smallest gap between the best and second-best logit along the way."""
    seq = list(ids)
    margin = float("inf")
    for t in continuation:
        logits = model(torch.tensor([seq])).logits[0, -1]
        top = torch.topk(logits, 2)
        assert int(top.indices[0]) == t, "generate disagrees with a plain greedy pass"
        margin = min(margin, float(top.values[0] - top.values[1]))
        seq.append(t)
    return margin


def references(folder, prompts, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    out = []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            logits = model(x).logits[0, -1]
            # No end-of-sequence stop: all 8 tokens, whatever they are.
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0)
            cont = [int(t) for t in gen[0, len(ids):]]
            assert len(cont) == NEW_TOKENS
            margin = greedy_check(model, ids, cont)
            out.append({"ids": ids, "last_logits": [float(v) for v in logits],
                        "greedy": cont, "greedy_min_margin": margin})
    chat_text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    chat_ids = tokenizer.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True,
                                             return_dict=False)
    assert chat_ids == tokenizer.encode(chat_text, add_special_tokens=False)
    eos = model.generation_config.eos_token_id
    return {
        "prompts": out,
        "eos_token_ids": eos if isinstance(eos, list) else [eos],
        "tokenizer": {
            "encode": [{"text": s, "ids": tokenizer.encode(s)} for s in TOKENIZER_STRINGS],
            "chat": {"messages": CHAT, "add_generation_prompt": True, "text": chat_text,
                     "ids": chat_ids},
        },
    }


def legacy_layout(folder):
    """Rewrites config.json as transformers 4.x wrote it, as most Hub checkpoints still are:
    `rope_theta` and `rope_scaling` at the top level instead of `rope_parameters`, and
    `torch_dtype` instead of `dtype`."""
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = rope
    config["torch_dtype"] = config.pop("dtype")
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main():
    tokenizer = make_tokenizer()
    gen = torch.Generator().manual_seed(SEED)
    prompts = [[int(t) for t in torch.randint(0, VOCAB, (n,), generator=gen)]
               for n in PROMPT_LENGTHS]
    for index, (name, config, dtype, save_args) in enumerate(configs()):
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        randomize(model, torch.Generator().manual_seed(SEED + 1 + index))
        model.to(dtype).save_pretrained(folder, **save_args)
        # llama and mistral in the layout of transformers 4.x (chat template inside
        # tokenizer_config.json, rope in the old keys); qwen2 and qwen3 as 5.x writes them
        # (chat_template.jinja, rope_parameters): a loader must read both.
        legacy = name in ("llama", "mistral")
        if legacy:
            legacy_layout(folder)
        # Through a reload, so the saved files are what the reference is computed from.
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            AutoTokenizer.from_pretrained(tmp).save_pretrained(folder, save_jinja_files=not legacy)
        reloaded = transformers.AutoConfig.from_pretrained(folder)
        assert reloaded.rope_parameters == config.rope_parameters, (name, reloaded.rope_parameters)
        ref = references(folder, prompts, AutoTokenizer.from_pretrained(folder))
        ref = {
            "generated_by": "scripts/make_tiny_checkpoints.py",
            "family": name,
            "stored_dtype": str(dtype).removeprefix("torch."),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "tokenizers": tokenizers.__version__,
                         "safetensors": safetensors.__version__},
            **ref,
        }
        text = json.dumps(ref, ensure_ascii=False, indent=1)
        # Lists of numbers on one line each: a readable file, and diffs that show a prompt.
        text = re.sub(r"\[\s*([-+0-9.eE,\s]*?)\s*\]",
                      lambda m: "[" + ", ".join(re.split(r",\s*", m.group(1))) + "]"
                      if m.group(1) else "[]", text)
        assert json.loads(text) == ref
        with open(os.path.join(folder, "reference.json"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        margins = [p["greedy_min_margin"] for p in ref["prompts"]]
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        print(f"{name}: {sorted(os.listdir(folder))}, {size // 1024} KiB, "
              f"greedy margins {[round(m, 4) for m in margins]}")
        assert min(margins) >= MIN_MARGIN, f"{name}: a greedy step is a near tie; change SEED"


if __name__ == "__main__":
    main()
