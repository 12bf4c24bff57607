#!/usr/bin/env python3
"""PyTorch baseline for Tessera's GPU training-step benchmark.

What it does
------------
Runs the same training steps as Tessera's generated `*_train_step` models
(src/models/{mlp,gpt}.cpp, src/models/registry.cpp, src/transforms/optimizer.cpp)
in PyTorch, on one CUDA GPU, in these modes in the same process (the first
three by default):

  eager            plain PyTorch; AdamW with its default implementation
                   (foreach=None, which picks the multi-tensor "foreach"
                   kernels on CUDA; not fused; capturable=False).
  compile          torch.compile(step) in the default mode.
  reduce-overhead  torch.compile(step, mode="reduce-overhead") (CUDA Graphs
                   through cudagraph trees).
  checkpoint       eager, with torch.utils.checkpoint(use_reentrant=False)
                   around every transformer block (the MLP: every layer with
                   its activation), so the backward recomputes each block's
                   activations from its input: the baseline for Tessera's
                   remat (issue 7).

One "step" is zero_grad(set_to_none=True), forward, loss, backward,
optimizer.step(), on inputs (x, y) created once on the GPU (static,
device-resident, as Tessera's bench feeds them). For the compiled modes the
whole step function is compiled (Dynamo breaks the graph at loss.backward():
forward+loss, the AOT-autograd backward and the AdamW update are each compiled,
the update by Dynamo's compiled-optimizer support, which also switches the
optimizer to capturable=True). If compiling the whole step fails, the mode is
retried with only forward+loss compiled (optimizer eager, foreach) and the
output says so.

For every model and mode it reports the median and min of the per-step times
over --steps timed steps after --warmup warm-up steps (one torch.cuda.Event per
step boundary, so consecutive steps are timed back to back without host
synchronization between them; the mean from the wall clock over the same loop
is reported too), and the peak GPU memory of the steady-state step:
torch.cuda.max_memory_allocated() in MiB after torch.cuda.empty_cache() and
reset_peak_memory_stats() at the end of the warm-up, over one untimed step and
the timed steps. It covers params, optimizer state, activations, gradients and
the cuBLAS workspace, not compilation (Inductor's benchmarking buffers). Under
reduce-overhead a CUDA Graph replays into its private memory pool without
calling the allocator, so "allocated" misses the graphs' intermediates there;
max_memory_reserved() (column peak_reserved_mib, which includes that pool) is
the figure to compare for that mode. A table goes to stdout and a CSV to --csv.

CSV columns: model,mode,median_ms,min_ms,peak_mib,steps,device,torch_version,
then (extra, after the required ones) dtype,mean_ms,peak_reserved_mib,compiled,
optimizer,capturable,first_loss,last_loss,note. A mode that fails is printed
with its error and recorded with NaN times and memory.

Models (name -> config), matched to Tessera's graphs
----------------------------------------------------
  mlp             MLP 784-256-10, ReLU between layers, biases, batch 64;
                  x ~ N(0, 1) f32 [64, 784], y ~ U{0..9} [64].
  gpt_small_test  GPT vocab 96, block 64, 1 layer, 4 heads, n_embd 64,
                  batch 8 (the generated gpt_step's parameters).
  gpt2_small      GPT vocab 50304, block 1024, 12 layers, 12 heads,
                  n_embd 768, batch 8 (same architecture, GPT-2 small size).
  gpt_custom      --gpt "vocab=..,block=..,layers=..,heads=..,embd=..,batch=.."
                  (missing keys take gpt_train_step's defaults 96,64,1,4,64,8);
                  giving --gpt adds gpt_custom to the model list.

Matched to Tessera (see the tessera-opt dumps of mlp_train_step/gpt_train_step):
  * MLP: nn.Linear layout [out, in] with bias; ReLU (the registry default
    activation) after every layer but the last; mean cross-entropy,
    ignore_index=-100. Init as mlp_init: weight and bias U(-1/sqrt(in), 1/sqrt(in))
    (PyTorch's nn.Linear default, written out explicitly).
  * GPT (GptConfig defaults): bias=True on every Linear and LayerNorm,
    LayerNorm eps 1e-5, GELU tanh form ("gelu(approximate='tanh')"), causal
    attention with scale 1/sqrt(head_dim), q/k/v split from c_attn in that
    order, MLP width 4C, x = wte[idx] + wpe (the whole [block, C] table, as
    the static-shape graph adds it), ln_f, an UNTIED lm_head without bias
    (tie_weights=false: Tessera has a separate lm_head.weight param),
    dropout 0 (no dropout modules at all), mean cross-entropy over B*T.
    Init as gpt_init: wte, wpe, c_attn, c_fc, lm_head weights N(0, 0.02);
    attn.c_proj and mlp.c_proj weights N(0, 0.02/sqrt(2*n_layer)); biases 0;
    LayerNorm weight 1, bias 0. Param names match Tessera's
    (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...).
  * AdamW as in adamw(): lr 1e-3 (what Tessera's examples feed as optim.lr),
    betas (0.9, 0.999), eps 1e-8, weight_decay 0.01 in the decoupled form
    (param *= 1 - lr*wd) applied to EVERY param (biases, LayerNorm and
    embeddings included: one param group), amsgrad off, no grad clipping
    (max_grad_norm 0).
  * Attention: F.scaled_dot_product_attention(q, k, v, is_causal=True) by
    default -- the same math as Tessera's attention op (softmax(q k^T /
    sqrt(D) + causal mask) v) through PyTorch's fused kernels, which is what
    a PyTorch user would write. --attn math uses the explicit
    matmul/mask/softmax/matmul form instead.

What it does not do
-------------------
  * It does not reproduce Tessera's parameter values bit for bit (Tessera
    draws with its own SplitMix64/Box-Muller generator); only the
    distributions match. Timing does not depend on the values.
  * Token ids and class labels are int64 here (PyTorch's cross_entropy needs
    Long targets); Tessera's graphs take int32. This does not change the work.
  * No data loading, LR schedule, gradient accumulation, clipping,
    mixed-precision loss scaling, multi-GPU, or checkpoint files; activation
    checkpointing only in the checkpoint mode (per block, not selective).
  * --dtype bf16 is torch.autocast(bfloat16) around forward+loss with f32
    params and f32 AdamW; --dtype tf32 allows TF32 for f32 matmuls (cuBLAS)
    and cuDNN. Whether these match a given Tessera precision policy is up to
    the caller.

Usage
-----
  python3 bench/pytorch_steps.py
  python3 bench/pytorch_steps.py --models mlp,gpt_small_test,gpt2_small --steps 200 --warmup 20 --csv pytorch_steps.csv
  python3 bench/pytorch_steps.py --models gpt2_small --dtype bf16 --csv pytorch_steps_bf16.csv
  python3 bench/pytorch_steps.py --models none --gpt "vocab=50304,block=1024,layers=12,heads=12,embd=768,batch=4"
  python3 bench/pytorch_steps.py --models gpt2_small --dtype bf16 --modes eager,compile,checkpoint
Other flags: --modes (subset of eager,compile,reduce-overhead,checkpoint), --attn sdpa|math,
--compile-scope step|model (model: compile only forward+loss), --seed, --device.
The timings on a shared or virtualized host are CPU-launch bound for the small
models (mlp, gpt_small_test): compare modes and Tessera only within one run on
one machine.
"""

import argparse
import csv
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.utils.checkpoint
except ImportError as e:  # pragma: no cover - the target machine has torch
    sys.exit(f"pytorch_steps.py needs PyTorch: {e}")


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

# AdamW exactly as Tessera's AdamWOptions defaults (include/tessera/optimizer.h)
# with the lr Tessera's examples feed as "optim.lr".
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)

# gpt_train_step's registry defaults (src/models/registry.cpp, gpt_config).
GPT_DEFAULTS = dict(vocab=96, block=64, layers=1, heads=4, embd=64, batch=8)

MODELS = {
    "mlp": dict(kind="mlp", sizes=(784, 256, 10), batch=64, activation="relu"),
    "gpt_small_test": dict(kind="gpt", **GPT_DEFAULTS),
    "gpt2_small": dict(kind="gpt", vocab=50304, block=1024, layers=12, heads=12, embd=768, batch=8),
}

MODES = ("eager", "compile", "reduce-overhead", "checkpoint")
DEFAULT_MODES = ("eager", "compile", "reduce-overhead")

CSV_COLUMNS = [
    # required
    "model", "mode", "median_ms", "min_ms", "peak_mib", "steps", "device", "torch_version",
    # extra
    "dtype", "mean_ms", "peak_reserved_mib", "compiled", "optimizer", "capturable",
    "first_loss", "last_loss", "note",
]


def parse_gpt_spec(text):
    """'vocab=..,block=..,layers=..,heads=..,embd=..,batch=..' -> config dict."""
    cfg = dict(kind="gpt", **GPT_DEFAULTS)
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--gpt: '{item}' is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in GPT_DEFAULTS:
            raise ValueError(f"--gpt: unknown key '{key}' (known: {', '.join(GPT_DEFAULTS)})")
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"--gpt: {key}={value} is not an integer") from None
        if v < 1:
            raise ValueError(f"--gpt: {key}={value} must be >= 1")
        cfg[key] = v
    if cfg["embd"] % cfg["heads"] != 0:
        raise ValueError(f"--gpt: embd ({cfg['embd']}) must be a multiple of heads ({cfg['heads']})")
    return cfg


def describe(cfg):
    if cfg["kind"] == "mlp":
        return f"MLP {'-'.join(map(str, cfg['sizes']))} {cfg['activation']}, batch {cfg['batch']}"
    return (f"GPT vocab {cfg['vocab']}, block {cfg['block']}, {cfg['layers']} layer(s), "
            f"{cfg['heads']} heads, n_embd {cfg['embd']}, batch {cfg['batch']}")


# ---------------------------------------------------------------------------
# Models (same structure, param names and init as src/models/*.cpp)
# ---------------------------------------------------------------------------

def checkpointed(fn, enabled, *args):
    """fn(*args), under torch.utils.checkpoint when enabled (and autograd records).

    Non-reentrant: autocast's state is saved with the inputs and restored for
    the recompute, so the recomputed block runs in the same dtypes.
    """
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class MLP(nn.Module):
    """src/models/mlp.cpp: linear layers with bias, activation between them."""

    def __init__(self, sizes, activation="relu"):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))
        # Tessera's "gelu" for the MLP is the exact erf form.
        self.act = nn.ReLU() if activation == "relu" else nn.GELU(approximate="none")
        self.checkpoint_blocks = False  # the checkpoint mode: each layer with its activation
        # mlp_init: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
        with torch.no_grad():
            for lin in self.layers:
                bound = 1.0 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
                nn.init.uniform_(lin.bias, -bound, bound)

    def layer(self, i, x):
        x = self.layers[i](x)
        return self.act(x) if i + 1 < len(self.layers) else x

    def forward(self, x):
        for i in range(len(self.layers)):
            x = checkpointed(self.layer, self.checkpoint_blocks, i, x)
        return x

    @staticmethod
    def loss(logits, y):
        return F.cross_entropy(logits, y)  # mean, ignore_index=-100, as Tessera's cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, embd, heads, block, attn_impl):
        super().__init__()
        self.c_attn = nn.Linear(embd, 3 * embd, bias=True)
        self.c_proj = nn.Linear(embd, embd, bias=True)
        self.heads = heads
        self.embd = embd
        self.attn_impl = attn_impl
        if attn_impl == "math":
            mask = torch.tril(torch.ones(block, block, dtype=torch.bool))
            self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        H = self.heads
        D = C // H
        q, k, v = self.c_attn(x).split(C, dim=2)      # q, k, v rows in this order (Tessera's slices)
        q = q.view(B, T, H, D).transpose(1, 2)        # [B, H, T, D]
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        if self.attn_impl == "sdpa":
            # Same math as Tessera's attention(causal=true, scale<=0 -> 1/sqrt(D)),
            # through PyTorch's fused attention kernels (what a user would write).
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
            att = att.masked_fill(~self.causal_mask[:T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)                         # dropout 0: none


class GptMLP(nn.Module):
    def __init__(self, embd):
        super().__init__()
        self.c_fc = nn.Linear(embd, 4 * embd, bias=True)
        self.gelu = nn.GELU(approximate="tanh")       # Tessera: gelu(approximate="tanh")
        self.c_proj = nn.Linear(4 * embd, embd, bias=True)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, embd, heads, block, attn_impl):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embd, eps=1e-5, elementwise_affine=True, bias=True)
        self.attn = CausalSelfAttention(embd, heads, block, attn_impl)
        self.ln_2 = nn.LayerNorm(embd, eps=1e-5, elementwise_affine=True, bias=True)
        self.mlp = GptMLP(embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """src/models/gpt.cpp with GptConfig's defaults: bias, no dropout, untied lm_head."""

    def __init__(self, vocab, block, layers, heads, embd, attn_impl="sdpa"):
        super().__init__()
        self.vocab = vocab
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, embd),
            wpe=nn.Embedding(block, embd),
            h=nn.ModuleList(Block(embd, heads, block, attn_impl) for _ in range(layers)),
            ln_f=nn.LayerNorm(embd, eps=1e-5, elementwise_affine=True, bias=True),
        ))
        self.lm_head = nn.Linear(embd, vocab, bias=False)  # NOT tied to wte (tie_weights=false)
        self.checkpoint_blocks = False  # the checkpoint mode: torch.utils.checkpoint per block
        # gpt_init (GPT-2 / nanoGPT).
        std = 0.02
        proj_std = 0.02 / math.sqrt(2.0 * layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, proj_std)
                elif name.startswith("transformer.ln_") or ".ln_" in name:
                    if name.endswith(".weight"):
                        nn.init.ones_(p)
                    else:
                        nn.init.zeros_(p)
                elif name.endswith(".bias"):
                    nn.init.zeros_(p)
                else:  # wte, wpe, c_attn, c_fc, lm_head weights
                    nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        # Tessera's graph is static: T == block_size and it adds the whole wpe table.
        x = self.transformer.wte(idx) + self.transformer.wpe.weight  # [B, T, C] + [T, C]
        for blk in self.transformer.h:
            x = checkpointed(blk, self.checkpoint_blocks, x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)  # [B, T, V]

    def loss(self, logits, targets):
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))


def build(cfg, device, attn_impl, seed, checkpoint_blocks=False):
    """A fresh model, AdamW and static inputs on `device`, seeded."""
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if cfg["kind"] == "mlp":
        model = MLP(cfg["sizes"], cfg["activation"])
        loss_fn = MLP.loss
        x = torch.randn(cfg["batch"], cfg["sizes"][0])
        y = torch.randint(0, cfg["sizes"][-1], (cfg["batch"],), dtype=torch.int64)
    else:
        model = GPT(cfg["vocab"], cfg["block"], cfg["layers"], cfg["heads"], cfg["embd"], attn_impl)
        loss_fn = model.loss
        x = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["block"]), dtype=torch.int64)
        y = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["block"]), dtype=torch.int64)
    model.checkpoint_blocks = checkpoint_blocks
    model = model.to(device)
    model.train()
    x = x.to(device)
    y = y.to(device)
    # Default implementation (foreach=None -> foreach kernels on CUDA, not fused,
    # capturable=False); torch.compile of opt.step() turns capturable on itself.
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    return model, loss_fn, opt, x, y


# ---------------------------------------------------------------------------
# Step functions
# ---------------------------------------------------------------------------

def make_fwd_loss(model, loss_fn, use_autocast):
    if use_autocast:
        def fwd_loss(x, y):
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return loss_fn(model(x), y)
    else:
        def fwd_loss(x, y):
            return loss_fn(model(x), y)
    return fwd_loss


def make_step(model, loss_fn, opt, mode, scope, use_autocast):
    """Returns (step, compiled_description, optimizer_description)."""
    fwd_loss = make_fwd_loss(model, loss_fn, use_autocast)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = fwd_loss(x, y)
        loss.backward()
        opt.step()
        return loss

    if mode == "eager":
        return step, "nothing", "AdamW eager"
    if mode == "checkpoint":
        return step, "nothing; torch.utils.checkpoint on every block", "AdamW eager"

    compile_mode = None if mode == "compile" else "reduce-overhead"
    if scope == "step":
        compiled = torch.compile(step) if compile_mode is None else torch.compile(step, mode=compile_mode)
        return compiled, "whole step (fwd+loss, bwd, AdamW)", "AdamW compiled"

    # scope == "model": only forward+loss compiled; the optimizer runs eagerly.
    cfwd = torch.compile(fwd_loss) if compile_mode is None else torch.compile(fwd_loss, mode=compile_mode)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = cfwd(x, y)
        loss.backward()
        opt.step()
        return loss
    return step, "fwd+loss (and its bwd) only", "AdamW eager"


# ---------------------------------------------------------------------------
# Running one model in one mode
# ---------------------------------------------------------------------------

def cleanup():
    """Frees what earlier modes left: compiled code, CUDA Graph pools, cached blocks."""
    gc.collect()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass
    try:
        from torch._inductor import cudagraph_trees
        cudagraph_trees.reset_cudagraph_trees()
    except Exception:  # noqa: BLE001
        pass
    gc.collect()
    torch.cuda.synchronize()
    # cuBLAS/cuBLASLt workspaces live in the caching allocator and persist;
    # free them so that every mode starts from zero and counts its own.
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        try:
            clear()
        except Exception:  # noqa: BLE001
            pass
    torch.cuda.empty_cache()


def dynamo_counter(group, key):
    try:
        from torch._dynamo.utils import counters
        return int(counters[group][key])
    except Exception:  # noqa: BLE001
        return 0


def mark_step_fn(mode):
    if mode != "reduce-overhead":
        return None
    fn = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    return fn


def attempt(cfg, mode, scope, args, device):
    """Builds, warms up and times one (model, mode, scope). Raises on failure."""
    cleanup()
    base = torch.cuda.memory_allocated(device)
    model, loss_fn, opt, x, y = build(cfg, device, args.attn, args.seed, checkpoint_blocks=mode == "checkpoint")
    step, compiled, optimizer = make_step(model, loss_fn, opt, mode, scope, args.dtype == "bf16")
    mark = mark_step_fn(mode)

    def run_one():
        if mark is not None:
            mark()
        return step(x, y)

    # Warm-up (compilation, CUDA Graph recording, optimizer state allocation).
    first_loss = float("nan")
    for i in range(args.warmup):
        loss = run_one()
        if i == 0:
            first_loss = float(loss.detach())  # read now: a CUDA Graph output is reused next step
    torch.cuda.synchronize(device)

    # Peak memory of the steady-state step, not of compilation: drop the
    # allocator's cached blocks (Inductor's benchmarking buffers, say; CUDA
    # Graph pools stay), reset the peaks, and run one untimed step that
    # re-reserves what a step needs. The peaks then cover that step and the
    # timed ones.
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    loss = run_one()
    del loss
    torch.cuda.synchronize(device)
    graphs_before = dynamo_counter("stats", "unique_graphs")

    # Timed steps: one event per step boundary, no host sync in between.
    events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)]
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    events[0].record()
    loss = None
    for i in range(args.steps):
        loss = run_one()
        events[i + 1].record()
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    last_loss = float(loss.detach()) if loss is not None else float("nan")
    del loss

    times = [events[i].elapsed_time(events[i + 1]) for i in range(args.steps)]
    if args.kernel_profile:
        profile_kernels(run_one, device, f"{args.kernel_profile}_{cfg['kind']}_{mode}.csv")
    peak = torch.cuda.max_memory_allocated(device)
    peak_reserved = torch.cuda.max_memory_reserved(device)
    notes = []
    recompiled = dynamo_counter("stats", "unique_graphs") - graphs_before
    if recompiled > 0:
        notes.append(f"{recompiled} graph(s) compiled during the timed steps (raise --warmup)")
    skips = dynamo_counter("inductor", "cudagraph_skips")
    if mode == "reduce-overhead" and skips > 0:
        notes.append(f"cudagraphs skipped {skips} time(s) so far in this process (see log)")
    if mode == "reduce-overhead":
        notes.append("peak_mib misses the CUDA Graph pool: compare peak_reserved_mib")
    if base > (1 << 20):
        notes.append(f"{base / 2**20:.1f} MiB was already allocated before the model was built")
    if not all(math.isfinite(v) for v in (first_loss, last_loss)):
        notes.append("non-finite loss")
    group = opt.param_groups[0]
    capturable = bool(group.get("capturable", False))
    foreach = group.get("foreach", None)
    if mode in ("eager", "checkpoint") or scope == "model":
        optimizer += (f" (foreach={foreach}, fused={group.get('fused', None)}"
                      + ("; None picks foreach kernels on CUDA)" if foreach is None else ")"))

    result = dict(
        median_ms=statistics.median(times),
        min_ms=min(times),
        mean_ms=wall / args.steps * 1e3,
        peak_mib=peak / 2**20,
        peak_reserved_mib=peak_reserved / 2**20,
        compiled=compiled,
        optimizer=optimizer,
        capturable=capturable,
        first_loss=first_loss,
        last_loss=last_loss,
        note="; ".join(notes),
    )
    del step, model, opt, x, y, events
    return result


def profile_kernels(run_one, device, path, steps=3):
    """Runs `steps` more steps under torch.profiler and writes each CUDA
    kernel's name, launches per step and microseconds per step to `path`,
    slowest first: what the step spends its GPU time on, to set beside
    Tessera's per-kernel profile. Not part of the timed figures."""
    from torch.profiler import profile, ProfilerActivity
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run_one()
        torch.cuda.synchronize(device)
    totals = {}
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        count, us = totals.get(ev.name, (0, 0.0))
        totals[ev.name] = (count + 1, us + ev.device_time)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", "launches_per_step", "us_per_step"])
        for name, (count, us) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            w.writerow([name, count / steps, f"{us / steps:.2f}"])
    total = sum(us for _, us in totals.values()) / steps
    print(f"     kernel profile: {total / 1e3:.3f} ms of kernels per step, "
          f"{sum(c for c, _ in totals.values()) / steps:.0f} launches -> {path}")


def short_error(e):
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    head = lines[0] if lines else ""
    return f"{type(e).__name__}: {head[:300]}"


def run_mode(cfg, mode, args, device):
    nan = float("nan")
    failed = dict(median_ms=nan, min_ms=nan, mean_ms=nan, peak_mib=nan, peak_reserved_mib=nan,
                  compiled="", optimizer="", capturable="", first_loss=nan, last_loss=nan, note="")
    scopes = ["step"] if mode in ("eager", "checkpoint") else ([args.compile_scope] if args.compile_scope == "model"
                                               else ["step", "model"])
    errors = []
    for scope in scopes:
        try:
            r = attempt(cfg, mode, scope, args, device)
            if errors:
                r["note"] = "; ".join(x for x in [f"whole-step compile failed ({errors[-1]}); "
                                                  f"fell back to compiling fwd+loss only", r["note"]] if x)
                print(f"    note: whole-step compile failed; fell back to compiling only forward+loss "
                      f"(optimizer eager)", flush=True)
            return r
        except Exception as e:  # noqa: BLE001 - report, then fall back or record NaN
            errors.append(short_error(e))
            print(f"    {mode} (scope {scope}) FAILED: {short_error(e)}", flush=True)
            tb = traceback.format_exc().rstrip().splitlines()
            for ln in tb[-args.traceback_lines:]:
                print(f"      | {ln}", flush=True)
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - a broken CUDA context fails here too
                pass
    failed["note"] = "FAILED: " + " | ".join(errors)
    failed["compiled"] = "failed"
    return failed


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def fmt(v, spec):
    return format(v, spec)  # NaN formats as "nan", padded to the width


def write_csv(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            out = dict(r)
            for k in ("median_ms", "min_ms", "mean_ms", "peak_mib", "peak_reserved_mib"):
                v = out.get(k)
                out[k] = "NaN" if (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"
            for k in ("first_loss", "last_loss"):
                v = out.get(k)
                out[k] = "NaN" if (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6f}"
            w.writerow(out)
    os.replace(tmp, path)


def print_table(rows):
    hdr = (f"{'model':<16} {'mode':<16} {'median ms':>10} {'min ms':>10} {'mean ms':>10} "
           f"{'peak MiB':>10} {'rsvd MiB':>10} {'loss@1':>8} {'loss@end':>8}  compiled / optimizer / notes")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        extra = r["compiled"]
        if r["optimizer"]:
            extra += f" / {r['optimizer']}, capturable={r['capturable']}"
        if r["note"]:
            extra += f" / {r['note']}"
        print(f"{r['model']:<16} {r['mode']:<16} {fmt(r['median_ms'], '10.4f')} {fmt(r['min_ms'], '10.4f')} "
              f"{fmt(r['mean_ms'], '10.4f')} {fmt(r['peak_mib'], '10.1f')} {fmt(r['peak_reserved_mib'], '10.1f')} "
              f"{fmt(r['first_loss'], '8.4f')} "
              f"{fmt(r['last_loss'], '8.4f')}  {extra}")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def set_precision(dtype):
    """f32: no TF32 for matmuls; tf32: TF32 for cuBLAS matmuls and cuDNN; bf16: autocast (set per step).

    Uses the legacy flags on purpose: their setters update the legacy and the
    new (fp32_precision) state together, so Inductor's consistency checks see
    no mix of the two APIs. cuDNN is only touched for tf32 (where True is also
    its default): these models have no convolutions or RNNs, so cuDNN's TF32
    flag does not change what f32 runs.
    """
    allow = dtype == "tf32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = allow
        if allow:
            torch.backends.cudnn.allow_tf32 = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return (f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                    f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")
    except Exception as e:  # noqa: BLE001
        return f"(could not read the TF32 flags: {short_error(e)})"


def count_params(cfg, attn_impl):
    """Param count of the model, built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            m = (MLP(cfg["sizes"], cfg["activation"]) if cfg["kind"] == "mlp" else
                 GPT(cfg["vocab"], cfg["block"], cfg["layers"], cfg["heads"], cfg["embd"], attn_impl))
        return sum(p.numel() for p in m.parameters())
    except Exception:  # noqa: BLE001 - informational only
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,gpt_small_test",
                    help="comma list of: " + ", ".join(MODELS) + " (or 'none' with --gpt); default mlp,gpt_small_test")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES),
                    help="comma list of: " + ", ".join(MODES) + " (default " + ",".join(DEFAULT_MODES) + ")")
    ap.add_argument("--steps", type=int, default=200, help="timed steps (default 200)")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up steps before timing (default 20)")
    ap.add_argument("--csv", default="pytorch_steps.csv", help="CSV output path (default pytorch_steps.csv)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "tf32", "bf16"],
                    help="f32 (default, no TF32), tf32 (TF32 matmuls), bf16 (autocast bf16 fwd+loss)")
    ap.add_argument("--gpt", default=None,
                    help='custom GPT "vocab=..,block=..,layers=..,heads=..,embd=..,batch=.." run as gpt_custom')
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "math"],
                    help="sdpa: F.scaled_dot_product_attention(is_causal=True) (default); math: explicit softmax")
    ap.add_argument("--compile-scope", default="step", choices=["step", "model"],
                    help="step: compile the whole step, falling back to fwd+loss on failure (default); "
                         "model: compile only fwd+loss")
    ap.add_argument("--kernel-profile", default=None, metavar="PREFIX",
                    help="after timing, profile 3 steps and write PREFIX_<mlp|gpt>_<mode>.csv "
                         "(each CUDA kernel's launches and microseconds per step)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--traceback-lines", type=int, default=25, help="traceback lines printed for a failed mode")
    args = ap.parse_args()

    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be >= 1")

    models = {}
    for name in (m.strip() for m in args.models.split(",")):
        if not name or name == "none":
            continue
        if name == "gpt_custom":
            if args.gpt is None:
                ap.error("gpt_custom needs --gpt")
            continue
        if name not in MODELS:
            ap.error(f"unknown model '{name}' (known: {', '.join(MODELS)}, gpt_custom with --gpt)")
        models[name] = MODELS[name]
    if args.gpt is not None:
        try:
            models["gpt_custom"] = parse_gpt_spec(args.gpt)
        except ValueError as e:
            ap.error(str(e))
    if not models:
        ap.error("no models to run")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode '{m}' (known: {', '.join(MODES)})")

    if not torch.cuda.is_available():
        sys.exit("pytorch_steps.py: no CUDA device visible to PyTorch")
    device = torch.device(args.device)
    if device.type != "cuda":
        sys.exit("pytorch_steps.py: --device must be a CUDA device")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    gpu = torch.cuda.get_device_name(device)
    precision = set_precision(args.dtype)

    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = "not found"
    print("PyTorch training-step baseline for Tessera (bench/pytorch_steps.py)")
    print(f"date     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"gpu      {gpu} (capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}, "
          f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.1f} GiB)")
    print(f"torch    {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"Triton {triton_version}, Python {platform.python_version()})")
    print(f"dtype    {args.dtype}: {precision}" + ("; autocast bf16 around forward+loss" if args.dtype == "bf16" else ""))
    print(f"timing   {args.warmup} warm-up + {args.steps} timed steps per mode; per-step CUDA events "
          f"(median, min); mean from wall clock")
    print(f"optim    AdamW lr={ADAMW['lr']} betas={ADAMW['betas']} eps={ADAMW['eps']} "
          f"weight_decay={ADAMW['weight_decay']} on all params; eager uses the default (foreach) implementation")
    print(f"attn     {args.attn}; compile scope {args.compile_scope}")
    print(flush=True)

    rows = []
    for name, cfg in models.items():
        nparams = count_params(cfg, args.attn)
        print(f"== {name}: {describe(cfg)}" + (f", {nparams:,} params" if nparams else ""), flush=True)
        for mode in modes:
            print(f"  -- {mode} ...", flush=True)
            r = run_mode(cfg, mode, args, device)
            r.update(model=name, mode=mode, steps=args.steps, device=gpu, torch_version=torch.__version__,
                     dtype=args.dtype)
            rows.append(r)
            print(f"     median {fmt(r['median_ms'], '.4f')} ms, min {fmt(r['min_ms'], '.4f')} ms, "
                  f"mean {fmt(r['mean_ms'], '.4f')} ms, peak {fmt(r['peak_mib'], '.1f')} MiB "
                  f"(reserved {fmt(r['peak_reserved_mib'], '.1f')} MiB), "
                  f"loss {fmt(r['first_loss'], '.4f')} -> {fmt(r['last_loss'], '.4f')}", flush=True)
            write_csv(args.csv, rows)  # rewritten after every mode: partial results survive a crash
        print(flush=True)

    print_table(rows)
    print(f"\nCSV written to {args.csv}")


if __name__ == "__main__":
    main()
