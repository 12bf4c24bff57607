#!/usr/bin/env python3
"""PyTorch baseline for tessera-finetune's GPU preset (bench only; trains nothing useful).

The same GPT as src/models/gpt.cpp (GPT-2 block: pre-LayerNorm with biases,
eps 1e-5; fused c_attn; causal attention; GELU tanh; learned positions;
untied lm_head; mean cross-entropy with ignore_index -100; GPT-2 init:
N(0, 0.02), the c_proj weights N(0, 0.02/sqrt(2 n_layer)), biases 0) at the
gpu preset's sizes (apps/finetune/finetune_model.cpp: 6 layers, n_embd 384,
6 heads, context 128, batch 32, vocabulary 96), trained on random tokens:

  pretrain  every param trained, AdamW (lr 1e-3, weight decay 0.01);
  lora      LoRA adapters (r 8, alpha 16, dropout 0, PEFT's init: A
            kaiming-uniform, B zeros) on every c_attn, c_proj and c_fc over a
            frozen base, AdamW (lr 5e-3, weight decay 0). With bitsandbytes
            and peft importable the base linears (all but lm_head) are NF4
            (bnb Linear4bit, f32 compute) and the adapters PEFT's, as QLoRA;
            otherwise the base stays f32 (with peft: PEFT's LoRA; without:
            the same adapters written here).

For each mode, eager and torch.compile: tokens/s over timed steps after
warm-up (the loss is read every step, as tessera-finetune does) and
torch.cuda.max_memory_allocated / max_memory_reserved. f32 by default
(--tf32: TF32 matmuls, as tessera-finetune --tf32). Prints a table and writes
--json. Does not check correctness against Tessera (test_finetune_gpu does
that for Tessera's own CPU and GPU paths).
"""
import argparse
import gc
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=1e-5)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.attn.c_proj = nn.Linear(c.n_embd, c.n_embd)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=1e-5)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.mlp.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(c.vocab, c.n_embd)
        self.transformer.wpe = nn.Embedding(c.block, c.n_embd)
        self.transformer.h = nn.ModuleList([Block(c) for _ in range(c.layers)])
        self.transformer.ln_f = nn.LayerNorm(c.n_embd, eps=1e-5)
        self.lm_head = nn.Linear(c.n_embd, c.vocab, bias=False)
        for name, p in self.named_parameters():  # GPT-2 init, as gpt_init
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or "ln_f" in name:
                nn.init.ones_(p)
            elif name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.layers))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[:T]
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


class LoraLinear(nn.Module):
    """A frozen linear plus PEFT's LoRA update (x A^T B^T * alpha / r), dropout 0."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


TARGETS = ("c_attn", "c_proj", "c_fc")


def has(module):
    try:
        __import__(module)
        return True
    except Exception:
        return False


def lora_model(c, device):
    """The QLoRA (or LoRA) model and a description of what it is."""
    model = GPT(c)
    use_bnb, use_peft = has("bitsandbytes") and has("peft"), has("peft")
    if use_bnb:
        import bitsandbytes as bnb

        for block in model.transformer.h:  # every linear but lm_head in NF4, as quantize_graph
            for parent, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
                old = getattr(parent, name)
                new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=True, compute_dtype=torch.float32,
                                        quant_type="nf4")
                new.weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, quant_type="nf4")
                new.bias = nn.Parameter(old.bias.data, requires_grad=False)
                setattr(parent, name, new)
    model = model.to(device)
    if use_peft:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=0.0,
                                                 target_modules=list(TARGETS), bias="none"))
        what = ("NF4 base (bitsandbytes) + PEFT LoRA" if use_bnb else "f32 base + PEFT LoRA (no bitsandbytes)")
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        for block in model.transformer.h:
            for parent, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
                setattr(parent, name, LoraLinear(getattr(parent, name), c.r, c.alpha))
        what = "f32 base + LoRA written here (no peft, no bitsandbytes)"
    return model, what


def bench(c, mode, compiled, device):
    torch.manual_seed(c.seed)
    torch._dynamo.reset()  # drop the last configuration's compiled graphs (and the model they hold)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    if mode == "pretrain":
        model, what = GPT(c).to(device), "f32, every param trained"
        lr, wd = c.pretrain_lr, 0.01
    else:
        model, what = lora_model(c, device)
        lr, wd = c.lora_lr, 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    step_fn = model
    if compiled:
        step_fn = torch.compile(model)

    def step():
        data = torch.randint(0, c.vocab, (c.batch, c.block + 1), device=device)
        loss = step_fn(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    for _ in range(c.warmup):
        step().item()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = 0.0
    for _ in range(c.steps):
        loss = step().item()  # read every step, as tessera-finetune does
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {
        "mode": mode,
        "compiled": compiled,
        "model": what,
        "trainable_params": sum(p.numel() for p in trainable),
        "steps": c.steps,
        "tokens_per_s": c.steps * c.batch * c.block / dt,
        "ms_per_step": 1e3 * dt / c.steps,
        "warmup_s": warm,
        "last_loss": loss,
        "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "max_memory_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=96)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--embd", type=int, default=384)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--lora-lr", type=float, default=5e-3)
    p.add_argument("--steps", type=int, default=200, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (torch.compile compiles here)")
    p.add_argument("--modes", default="pretrain,lora")
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls (default: f32)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", default="", help="also write the results here")
    c = p.parse_args()
    c.n_embd, c.n_head = c.embd, c.heads
    if not torch.cuda.is_available():
        print("pytorch_finetune.py: no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = c.tf32
    torch.backends.cudnn.allow_tf32 = c.tf32
    device = torch.device("cuda")
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}; GPT {c.layers} layers, n_embd {c.embd}, "
          f"{c.heads} heads, context {c.block}, batch {c.batch}, vocab {c.vocab}; {'TF32' if c.tf32 else 'f32'}; "
          f"bitsandbytes {'yes' if has('bitsandbytes') else 'no'}, peft {'yes' if has('peft') else 'no'}")
    results = []
    for mode in c.modes.split(","):
        for compiled in ([False] if c.no_compile else [False, True]):
            try:
                r = bench(c, mode, compiled, device)
            except Exception as e:  # e.g. torch.compile over bitsandbytes
                r = {"mode": mode, "compiled": compiled, "error": f"{type(e).__name__}: {e}"}
            results.append(r)
            if "error" in r:
                print(f"{mode:9s} {'compile' if compiled else 'eager':8s} failed: {r['error']}")
            else:
                print(f"{mode:9s} {'compile' if compiled else 'eager':8s} {r['tokens_per_s']:12.0f} tok/s "
                      f"{r['ms_per_step']:8.2f} ms/step  max_memory_allocated {r['max_memory_allocated_mib']:8.1f} MiB "
                      f"(reserved {r['max_memory_reserved_mib']:.1f})  loss {r['last_loss']:.4f}  [{r['model']}]")
    if c.json:
        with open(c.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "tf32": c.tf32,
                       "config": vars(c), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
