// The CUDA schedule set for sm_80 (NVIDIA A100): its parameters, and
// schedule_cuda_sm80, the entry point with schedule_cpu_x86's contract.
//
// The schedules themselves are the shared engine's (cuda_common.h); this
// file only says how large things are on this architecture. Like every
// Tessera CUDA target it compiles to Halide's cuda_capability_86 PTX, which
// the driver JIT-compiles for sm_80. It does not compile or run anything.
#include "cuda_common.h"

namespace tessera {

namespace {

// A100 SXM4 80 GB: 108 SMs, 164 KB of shared memory per SM, 2048 resident
// threads per SM, 65536 registers per SM (so 256-thread blocks at Halide's
// 64-register cap fit four to an SM).
constexpr CudaArch kSm80 = {
    /*name=*/"cuda_sm80",
    /*sm=*/80,
    /*gpu=*/"A100 (SXM4 80 GB)",

    /*sm_count=*/108,
    /*smem_per_sm_kb=*/164,
    /*smem_per_block_kb=*/48,  // Halide 14's runtime cannot opt in to more
    /*max_threads_per_sm=*/2048,

    // Pointwise: 256-thread blocks (8 per SM), 2-D tiles 64 wide x 4 rows,
    // one element per thread: 108 SMs x 2048 threads cover 221K elements per
    // wave, enough to hide A100's DRAM latency.
    /*pointwise_threads=*/256,
    /*pointwise_width=*/64,
    /*pointwise_per_thread=*/1,
    // Four contiguous elements per thread and load (16 bytes of f32, 8 of
    // bf16), as on sm_90 (measured there only; no A100 was at hand).
    /*vector=*/4,

    // Rows: up to 8 warps (256 threads) on one long row; short rows (under
    // 2048 elements) one warp each, 4 to a block, unless there are fewer than
    // 108 x 4 rows, when each row gets a block to keep every SM busy.
    /*row_warps=*/8,
    /*rows_per_block=*/4,
    /*block_row_min=*/2048,
    /*min_per_lane=*/4,

    // Grid reductions: 256 threads x 2 blocks per SM (216 blocks), each
    // thread reducing at least 16 elements. Down columns, four loads in
    // flight per thread.
    /*grid_threads=*/256,
    /*grid_blocks_per_sm=*/2,
    /*min_per_thread=*/16,
    /*column_unroll=*/4,

    // Products: 64 x 64 output tiles, 16 x 16 threads with 4 x 4 registers
    // each, k-tiles of 16: 16 KB (acc tile) + 8 KB (operand tiles) of shared
    // memory per block, six blocks' worth per SM.
    /*gemm_threads_n=*/16,
    /*gemm_threads_m=*/16,
    /*gemm_regs_n=*/4,
    /*gemm_regs_m=*/4,
    /*gemm_tile_k=*/16,

    // Datasheet: HBM2e 2039 GB/s, FP32 19.5 TFLOP/s (CUDA cores); a kernel
    // launch through Halide's runtime costs a few microseconds.
    /*dram_gbps=*/2039.0,
    /*fp32_tflops=*/19.5,
    /*launch_us=*/4.0,
};

}  // namespace

const CudaArch& cuda_sm80_arch() { return kSm80; }

std::string schedule_cuda_sm80(LoweredGraph& L, const Graph& g, const Halide::Target& target) {
  return schedule_cuda(L, g, target, kSm80);
}

}  // namespace tessera
