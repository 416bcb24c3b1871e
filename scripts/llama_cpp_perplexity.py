"""llama.cpp's perplexity of a GGUF file on a text, over exactly the windows and with exactly the
scoring of `metal-marlin eval perplexity` (docs/quantization.md), through the llama-cpp-python
binding (its wheel ships no llama-perplexity binary). Also requantizes a GGUF with llama.cpp's
own quantizer.

    /tmp/llama-venv/bin/python scripts/llama_cpp_perplexity.py quantize IN.gguf OUT.gguf q4_0
    /tmp/llama-venv/bin/python scripts/llama_cpp_perplexity.py ppl MODEL.gguf TEXT [CONTEXT] [STRIDE]

(the venv as in scripts/llama_cpp_bench.py). `quantize` passes allow_requantize, so a Q4_1 file
can become Q4_0 or Q8_0: those carry Q4_1's rounding too.

Scoring, as ours: the text is tokenized by the GGUF's tokenizer with the special tokens it adds by
default (SmolLM2 adds none); windows of CONTEXT tokens start every STRIDE tokens, the last one
shorter; each window runs from a fresh context and scores, for every token no earlier window
scored (never the window's first), -log softmax(logits of the previous position)[token] in f64.
The result is exp(mean) over the scored tokens. llama-perplexity differs: it scores only the
second half of each window, so its numbers are not comparable with ours.
"""
import json
import math
import sys
import time

import numpy as np


def windows(n, context, stride):
    out, prev_end, begin = [], 0, 0
    while begin < n:
        end = min(begin + context, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
        begin += stride
    return out


def perplexity(path, text_path, context=512, stride=512):
    from llama_cpp import Llama

    m = Llama(model_path=path, n_ctx=context, n_batch=context, n_threads=2,
              n_threads_batch=2, logits_all=True, verbose=False)
    text = open(text_path, encoding="utf-8").read()
    ids = m.tokenize(text.encode("utf-8"), add_bos=m.metadata.get(
        "tokenizer.ggml.add_bos_token", "false") == "true", special=False)
    nll, scored, start = 0.0, 0, time.time()
    for begin, end, first in windows(len(ids), context, stride):
        m.reset()
        m.eval(ids[begin:end])
        logits = np.asarray(m.scores[: end - begin], dtype=np.float64)
        for p in range(first - 1, end - 1):
            row = logits[p - begin]
            mx = row.max()
            lse = mx + math.log(np.exp(row - mx).sum())
            nll += lse - row[ids[p + 1]]
            scored += 1
    return {"perplexity": math.exp(nll / scored), "tokens": scored,
            "text_tokens": len(ids), "seconds": time.time() - start}


def quantize(src, dst, ftype):
    import llama_cpp

    types = {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1,
             "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[ftype]
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc})")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "quantize":
        quantize(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 4 and sys.argv[1] == "ppl":
        ctx = int(sys.argv[4]) if len(sys.argv) > 4 else 512
        stride = int(sys.argv[5]) if len(sys.argv) > 5 else ctx
        print(json.dumps(perplexity(sys.argv[2], sys.argv[3], ctx, stride)))
    else:
        sys.exit(__doc__)
