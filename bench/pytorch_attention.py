#!/usr/bin/env python3
"""PyTorch's fused attention on the shapes of bench_attention_gpu.cpp.

torch.nn.functional.scaled_dot_product_attention, causal, q/k/v of
[8, 12, seq, 64] (96 heads as in GPT-2 small at batch 8), seq 1024 and
2048, in bf16 and in f32 with TF32 allowed: the forward alone and the
backward alone (autograd of the forward's output, the forward outside the
timed region), with CUDA events, warm-up first, median of 25. TFLOP/s are
counted as bench_attention_gpu counts them. Prints which SDPA backend ran
(flash for bf16). Usage: pytorch_attention.py [--csv PATH]. Times only;
asserts nothing.
"""
import argparse
import statistics

import torch
import torch.nn.functional as F


def time_ms(fn, warmup=5, reps=25):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", help="write the figures here too")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}, PyTorch {torch.__version__}")
    rows = []
    for seq in (1024, 2048):
        for name, dtype in (("bf16", torch.bfloat16), ("tf32", torch.float32)):
            q, k, v = (torch.randn(8, 12, seq, 64, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            grad = torch.randn(8, 12, seq, 64, device="cuda", dtype=dtype)
            fwd = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))

            def backward():
                q.grad = k.grad = v.grad = None
                out.backward(grad, retain_graph=True)

            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            bwd = time_ms(backward)
            flops = 4.0 * 96 * seq * seq * 64 / 2
            for pass_, (median, low), f in (("forward", fwd, flops), ("backward", bwd, 2.5 * flops)):
                tflops = f / (median * 1e-3) / 1e12
                print(f"{name:5s} seq {seq:5d} {pass_:8s} median {median:8.3f} ms (min {low:8.3f})  {tflops:6.1f} TFLOP/s")
                rows.append(f"{gpu},{name},96,{seq},64,1,{pass_},{median:.4f},{low:.4f},{tflops:.2f}")
            print(f"  backend for {name}: {out.grad_fn.name()}")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("gpu,dtype,batch,seq,dim,causal,pass,median_ms,min_ms,tflops\n")
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
