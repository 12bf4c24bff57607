// The CUDA schedule set for sm_90 (NVIDIA H100; H200 is the same chip with
// faster memory): its parameters, and schedule_cuda_sm90, the entry point
// with schedule_cpu_x86's contract.
//
// The schedules themselves are the shared engine's (cuda_common.h); this
// file only says how large things are on this architecture: larger blocks
// and tiles than sm_80, for more SMs, more shared memory per SM and more
// memory bandwidth to keep busy. Like every Tessera CUDA target it compiles
// to Halide's cuda_capability_86 PTX, which the driver JIT-compiles for
// sm_90. It does not compile or run anything.
#include "cuda_common.h"

namespace tessera {

namespace {

// H100 SXM5: 132 SMs, 228 KB of shared memory per SM, 2048 resident threads
// per SM, 65536 registers per SM.
constexpr CudaArch kSm90 = {
    /*name=*/"cuda_sm90",
    /*sm=*/90,
    /*gpu=*/"H100 (SXM5 80 GB)",

    /*sm_count=*/132,
    /*smem_per_sm_kb=*/228,
    /*smem_per_block_kb=*/48,  // Halide 14's runtime cannot opt in to more
    /*max_threads_per_sm=*/2048,

    // Pointwise: 512-thread blocks, 2-D tiles 128 wide x 32 rows, eight rows
    // per thread (unrolled; fewer where the grid would have fewer blocks
    // than SMs): bf16 elements are 2 bytes, and with two rows per thread
    // too few loads were in flight to keep HBM3e busy. On an H200, the bf16
    // GPT-2 step's casts went 3.57 -> 3.08 ms, the step 23.9 -> 23.1 ms.
    /*pointwise_threads=*/512,
    /*pointwise_width=*/128,
    /*pointwise_per_thread=*/8,
    // Four contiguous elements per thread and load (16 bytes of f32, 8 of
    // bf16) instead of one 2- or 4-byte load per element: on an H200 the
    // bf16 GPT-2 step's Halide kernels went 7.90 -> 7.36 ms.
    /*vector=*/4,

    // Rows: up to 16 warps (512 threads) on one long row; short rows (under
    // 4096 elements) one warp each, 8 to a block, unless there are fewer than
    // 132 x 8 rows.
    /*row_warps=*/16,
    /*rows_per_block=*/8,
    /*block_row_min=*/4096,
    /*min_per_lane=*/4,

    // Grid reductions: 512 threads x 2 blocks per SM (264 blocks). Down
    // columns, eight loads in flight per thread (bf16 columns are 2 bytes a
    // row: one load each kept HBM3e at a fifth of its bandwidth).
    /*grid_threads=*/512,
    /*grid_blocks_per_sm=*/2,
    /*min_per_thread=*/16,
    /*column_unroll=*/8,

    // Products: 64 x 128 output tiles, 16 x 32 threads with 4 x 4 registers
    // each, k-tiles of 16: 32 KB (acc tile) + 12 KB (operand tiles) of
    // shared memory per block, five blocks' worth per SM.
    /*gemm_threads_n=*/16,
    /*gemm_threads_m=*/32,
    /*gemm_regs_n=*/4,
    /*gemm_regs_m=*/4,
    /*gemm_tile_k=*/16,

    // Datasheet: HBM3 3350 GB/s (H200: 4800), FP32 67 TFLOP/s (CUDA cores);
    // launches a little cheaper than on A100.
    /*dram_gbps=*/3350.0,
    /*fp32_tflops=*/67.0,
    /*launch_us=*/3.0,
};

}  // namespace

const CudaArch& cuda_sm90_arch() { return kSm90; }

std::string schedule_cuda_sm90(LoweredGraph& L, const Graph& g, const Halide::Target& target) {
  return schedule_cuda(L, g, target, kSm90);
}

}  // namespace tessera
