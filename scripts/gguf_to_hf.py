"""A Hugging Face folder (config.json, F16 model.safetensors, tokenizer files) made from a llama
GGUF, for checking `metal-marlin quantize` from a folder when no folder can be downloaded
(docs/quantization.md, "From a Hugging Face folder"). The weights are the GGUF's, decoded by the
`gguf` package (Q4_1, Q8_0, ...) and stored as F16 under Hugging Face names, with llama.cpp's row
permutation of q_proj and k_proj undone; config.json and the tokenizer files are taken from a
checkpoint that `metal-marlin quantize` wrote from the same GGUF (config.json without its
quantization_config).

    python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install gguf numpy
    M=~/.cache/metal-marlin/models/SmolLM2-135M-Instruct.Q4_1.gguf
    metal-marlin quantize $M -o smollm2-int4 --format int4
    /tmp/gguf-venv/bin/python scripts/gguf_to_hf.py $M smollm2-int4 smollm2-hf

Only the llama architecture (SmolLM2) is mapped.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
       "output.weight": "lm_head.weight"}
PER_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "chat_template.jinja", "generation_config.json"]


def field(reader, key):
    f = reader.fields[key]
    return int(f.parts[f.data[0]][0])


def unpermute(w, n_head):
    # llama.cpp's converter stores w.reshape(n_head, 2, d // n_head // 2, K).swapaxes(1, 2)
    # (rotary halves interleaved); this is its inverse.
    d = w.shape[0]
    return w.reshape(n_head, d // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(gguf_path, checkpoint, out):
    reader = GGUFReader(gguf_path)
    heads = field(reader, "llama.attention.head_count")
    kv_heads = field(reader, "llama.attention.head_count_kv")
    tensors = {}
    for t in reader.tensors:
        if t.name in TOP:
            name = TOP[t.name]
        else:
            _, layer, kind, _ = t.name.split(".")
            name = f"model.layers.{layer}.{PER_LAYER[kind]}.weight"
        # GGUF lists dimensions innermost first
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
            [int(x) for x in reversed(t.shape)])
        if kind_of(t.name) == "attn_q":
            w = unpermute(w, heads)
        elif kind_of(t.name) == "attn_k":
            w = unpermute(w, kv_heads)
        tensors[name] = w.astype(np.float16)
    os.makedirs(out, exist_ok=False)
    header, offset = {}, 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # safetensors: data starts 8-byte aligned
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in sorted(tensors):
            f.write(tensors[name].tobytes())
    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float16"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name in TOKENIZER:
        if os.path.exists(os.path.join(checkpoint, name)):
            shutil.copy(os.path.join(checkpoint, name), out)
    print(f"{out}: {len(tensors)} tensors, {offset} bytes of F16 weights")


def kind_of(gguf_name):
    parts = gguf_name.split(".")
    return parts[2] if parts[0] == "blk" else None


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
