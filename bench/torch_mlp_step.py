"""PyTorch baseline for the MLP training step (784-256-10, batch 64, ReLU,
cross-entropy, AdamW with PyTorch's defaults but weight_decay=0.01), the same
model as Tessera's mlp_step: eager, torch.compile (default) and
torch.compile(mode="reduce-overhead"), on one GPU. Prints one line per mode:
mean step time in microseconds over 500 steps after 50 warm-up steps.
Usage: python3 bench/torch_mlp_step.py [--device cuda|cpu]
"""
import argparse
import time

import torch


def make(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    x = torch.randn(64, 784, device=device)
    y = torch.arange(64, device=device) % 10
    return model, opt, x, y


def step_fn(model, opt):
    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def timed(step, x, y, device, n=500, warm=50):
    for _ in range(warm):
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step(x, y)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    for mode in ["eager", "compile", "reduce-overhead"]:
        model, opt, x, y = make(a.device)
        step = step_fn(model, opt)
        if mode == "compile":
            step = torch.compile(step)
        elif mode == "reduce-overhead":
            step = torch.compile(step, mode="reduce-overhead")
        try:
            us = timed(step, x, y, a.device)
            print(f"torch {mode:16s} {us:9.1f} us/step  ({torch.__version__}, {a.device})", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on to the next mode
            print(f"torch {mode:16s} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)


if __name__ == "__main__":
    main()
