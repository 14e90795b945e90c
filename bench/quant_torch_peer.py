# The PyTorch peer of bench/bench_quant.cpp: f32 products of the same shapes, 2 threads, median
# of timed runs after a warm-up. Run it back to back with build/bench_quant, with OpenBLAS's
# overrides unset in that command alone:
#   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/quant_torch_peer.py
import os
import time

import torch

torch.set_num_threads(2)
N = K = 4096


def median_seconds(fn, budget=1.0):
    fn()
    times, spent = [], 0.0
    while (spent < budget and len(times) < 100) or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        s = time.perf_counter() - t0
        times.append(s)
        spent += s
    times.sort()
    return times[len(times) // 2]


torch.manual_seed(1)
w = torch.randn(N, K) * 0.02
x = torch.randn(K)
print("PyTorch %s f32 peer, 2 threads, W %d x %d (load average %s)" %
      (torch.__version__, N, K, " ".join(open("/proc/loadavg").read().split()[:3])))
s = median_seconds(lambda: torch.mv(w, x))
print("  matvec torch.mv                 %7.3f ms   %6.1f weight GB/s" % (s * 1e3, 4.0 * N * K / s / 1e9))
for M in (64, 256):
    xb = torch.randn(M, K)
    dy = torch.randn(M, N)
    flops = 2.0 * M * N * K
    f = median_seconds(lambda: xb @ w.t())
    b = median_seconds(lambda: dy @ w)
    print("  batch %3d  x W^T %7.1f GFLOP/s   dy W %7.1f GFLOP/s" % (M, flops / f / 1e9, flops / b / 1e9))
