"""llama.cpp's prefill and decode speed on a GGUF file, measured as llama-bench does, to put
beside `metal-marlin bench` in the same session (docs/benchmarks.md).

    python3 -m venv /tmp/llama-venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
      -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF \
      -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF" \
      /tmp/llama-venv/bin/pip install llama-cpp-python      # builds llama.cpp, ~10 min on 2 cores
    /tmp/llama-venv/bin/python scripts/llama_cpp_bench.py ~/.cache/metal-marlin/models/SmolLM2-135M-Instruct.Q4_1.gguf

AMX stays off: with GGML_NATIVE the build enables it, and on these virtual machines its first
use crashes the process (DESIGN.md: never AMX).

pp128: one evaluation of a 128-token prompt; tg64: 64 evaluations of one token. The prompt is
the one `metal-marlin bench` uses. Two threads; one warm-up run, then the best of three.
"""
import sys
import time

from llama_cpp import Llama

path = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
m = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, verbose=False,
          n_ctx=512, n_batch=512)
vocab = m.n_vocab()
prompt = [1000 + (i * 7919) % (vocab - 1000) for i in range(128)]
best_pp = best_tg = 0.0
for run in range(4):
    m.reset()
    t = time.perf_counter()
    m.eval(prompt)
    pp = len(prompt) / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(64):
        m.eval([1000 + i])
    tg = 64 / (time.perf_counter() - t)
    if run > 0:
        best_pp, best_tg = max(best_pp, pp), max(best_tg, tg)
print(f"llama.cpp: pp128 {best_pp:.1f} tokens/s, tg64 {best_tg:.1f} tokens/s "
      f"({threads} threads, best of 3)")
