"""PyTorch's f16 matmul (cuBLAS) at the shapes of `metal-marlin bench kernels`, the baseline of
the GPU prefill GEMM (docs/benchmarks.md). Needs a CUDA GPU and torch; run it in the same
command as the bench so both see the same device state.

    python3 scripts/cublas_matmul.py --n 4096 --k 4096 --m 128,512,2048

For each M it prints y (M, N) = x (M, K) · W (N, K)^T with x and W in f16 and f32 accumulation
(torch's default for f16 matmul), timed by CUDA events over many calls after a warm-up: the
median of 5 batches, in µs per call and TFLOP/s.
"""

import argparse
import statistics

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--m", default="128,512,2048")
    p.add_argument("--calls", type=int, default=50)
    a = p.parse_args()
    dev = torch.device("cuda")
    print(f"# cuBLAS via torch {torch.__version__} on {torch.cuda.get_device_name(dev)}")
    print(f"{'M':>5} {'N':>6} {'K':>6} {'time µs':>10} {'TFLOP/s':>8}")
    # Several weight copies spanning more than the L2, as the bench's rotation does.
    copies = max(1, (256 << 20) // (a.n * a.k * 2))
    ws = [torch.randn(a.n, a.k, device=dev, dtype=torch.float16) * 0.02 for _ in range(copies)]
    for m in [int(v) for v in a.m.split(",")]:
        x = torch.randn(m, a.k, device=dev, dtype=torch.float16)
        for w in ws:
            x @ w.T
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(a.calls):
                x @ ws[i % copies].T
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1e3 / a.calls)
        t = statistics.median(times)
        print(f"{m:>5} {a.n:>6} {a.k:>6} {t:>10.2f} {2 * m * a.n * a.k / t / 1e6:>8.1f}")


if __name__ == "__main__":
    main()
