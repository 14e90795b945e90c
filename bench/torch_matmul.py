#!/usr/bin/env python3
"""The matmul rows of `bench_ops gemm`, in PyTorch (OpenBLAS on Debian): an optional peer.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/torch_matmul.py
"""
import time

import torch


def median_seconds(fn, budget=0.5):
    fn()
    times, spent = [], 0.0
    while (spent < budget and len(times) < 50) or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        s = time.perf_counter() - t0
        times.append(s)
        spent += s
    times.sort()
    return times[len(times) // 2]


def main():
    print(f"PyTorch {torch.__version__} matmul, f32, square (GFLOP/s, median)")
    print(f"{'size':>8} {'1 thread':>12} {'2 threads':>12}")
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        row = f"{n:8d}"
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row += f" {2 * n**3 / median_seconds(lambda: torch.mm(a, b)) / 1e9:12.1f}"
        print(row, flush=True)
    print("\nPyTorch linear x @ W^T, f32, GPT-2 small shapes (GFLOP/s, median)")
    print(f"{'M x K x N':>18} {'1 thread':>12} {'2 threads':>12}")
    for m, k, n in ((256, 768, 2304), (256, 768, 3072), (256, 3072, 768), (256, 768, 50257)):
        x, w = torch.randn(m, k), torch.randn(n, k)
        row = f"{m:6d} x {k:4d} x {n:5d}"
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row += f" {2 * m * k * n / median_seconds(lambda: torch.mm(x, w.t())) / 1e9:12.1f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
