#!/usr/bin/env python3
"""The GPT-2-small training step of `bench_ops gpt2`, in PyTorch: an optional peer, not a dependency.

Same model and settings: 12 layers x 768, 12 heads, vocabulary 50,257, context 1024, tied
lm_head, random weights, batch 4 x 64, AdamW (lr 1e-3, weight decay 0.01), 2 threads; the full
model and LoRA r=8 (alpha 16) on c_attn. Prints the median step like bench_ops, and the ratio
when given Ember's figures:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/torch_gpt2_step.py \
        [--ember-full-ms W --ember-full-bf16-ms X --ember-lora-ms Y --ember-lora-bf16-ms Z] [--steps N]

The second row, the peer of Ember's full step under bf16 autocast, keeps every parameter in f32
and runs the forward under torch.autocast("cpu", dtype=torch.bfloat16): the Linears' and the tied
head's products in bf16, everything else (AdamW, the loss) in f32. The fourth row, the peer of
Ember's LoRA step over a bf16 base, stores every frozen parameter in
bf16 (as a peft user loads a base with torch_dtype=torch.bfloat16) and runs the step under
PyTorch's CPU mixed precision, torch.autocast("cpu", dtype=torch.bfloat16): the matrix products
(the frozen weights', the adapters' and the tied head's) in bf16, the adapters, AdamW and the
loss in f32. (Ember keeps the adapters' small products in f32.)
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

V, C, L, H, CTX, B, T = 50257, 768, 12, 12, 1024, 4, 64


class LoraLinear(nn.Module):
    """h = W0 x + b + (alpha / r) B A x with W0, b frozen (peft's LoRA Linear)."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = nn.Linear(base.in_features, r, bias=False)
        self.B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.B(self.A(x)) * self.scale


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.register_buffer("mask", torch.full((CTX, CTX), float("-inf")).triu(1))

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(b, t, H, C // H).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H) + self.mask[:t, :t]
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(CTX, C)
        self.h = nn.ModuleList(Block() for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied lm_head


def step_ms(lora, steps, bf16=False):
    torch.manual_seed(0)
    model = GPT2()
    if lora:
        for p in model.parameters():
            p.requires_grad_(False)
        for block in model.h:
            block.c_attn = LoraLinear(block.c_attn, 8, 16)
        if bf16:
            for p in model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    ids = torch.randint(0, V, (B, T + 1))
    x, y = ids[:, :T], ids[:, 1:]
    times = []
    for s in range(steps + 2):  # two warm-up steps, as bench_ops
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(B * T, V), y.reshape(B * T))
        loss.backward()
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--ember-full-ms", type=float)
    ap.add_argument("--ember-full-bf16-ms", type=float)
    ap.add_argument("--ember-lora-ms", type=float)
    ap.add_argument("--ember-lora-bf16-ms", type=float)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"PyTorch {torch.__version__} GPT-2 small training step (batch {B} x {T}, AdamW, 2 threads, median)")
    print(f"{'model':>20} {'ms/step':>12} {'tokens/s':>12} {'torch/ember':>12}")
    rows = (("full", False, False, args.ember_full_ms), ("full, bf16 autocast", False, True, args.ember_full_bf16_ms),
            ("LoRA r=8", True, False, args.ember_lora_ms), ("LoRA r=8, bf16", True, True, args.ember_lora_bf16_ms))
    for name, lora, bf16, ember in rows:
        ms = step_ms(lora, args.steps, bf16)
        ratio = f"{ms / ember:12.2f}" if ember else f"{'-':>12}"
        print(f"{name:>20} {ms:12.1f} {B * T / ms * 1e3:12.0f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
