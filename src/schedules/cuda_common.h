// The CUDA schedule engine shared by the per-architecture schedule files
// (cuda_sm80.cpp, cuda_sm90.cpp), and the parameter struct each of them fills.
//
// schedule_cuda() puts every Func that a kernel materializes on the GPU:
//  - pointwise Funcs (materialized outputs, copies, pure internal stages):
//    gpu tiles, 2-D along the two innermost dims when rows are long enough,
//    else the dims fused into one flat loop; each thread may take several
//    rows (unrolled, strided by the block so loads stay coalesced);
//  - reductions along the contiguous dim (sum/mean/max over the last axis,
//    softmax/log_softmax over the last axis, layer_norm, rms_norm, the row
//    max and sum of logsumexp and cross_entropy): one warp per row for short
//    rows, one block per row for long ones; each reduction stage is computed
//    where its row is, split across the 32 lanes (rfactor + gpu_lanes,
//    partials in registers and combined with warp shuffles) and, for a block
//    per row, across warps (partials in shared memory);
//  - reductions across rows (the innermost dim kept) and other updates that
//    write at their own pure vars (attention's stages, define_grad's
//    adjoints that do not scatter): one thread per output element, the
//    reduction serial inside it, in registers (the stage is computed inside
//    a tiled wrapper, so initialization and reduction are one GPU kernel);
//    with too few outputs to fill the GPU the longest reduced dim is first
//    split into chunks reduced in parallel (rfactor);
//  - reductions to one value: a grid of blocks reduces strided chunks, one
//    block their partials, one thread (the consumer's) the rest;
//  - matrix products (matmul, linear): block tiles of the output, operands
//    staged through shared memory a k-tile at a time, each thread
//    accumulating a register micro-tile; ragged edges shift the last tile
//    inwards so every tile is full and no read leaves the operands;
//  - weight-only quantized products (linear_int8/_nf4 and their grad_input):
//    one thread per output element, serial over the reduction, the packed
//    weight dequantized inline;
//  - scattering updates (embedding_grad's table, define_grad adjoints):
//    parallel only over pure dims that the update writes at their own
//    position (e.g. the embedding dim), serial over positions; fully serial
//    on one GPU thread when there is none;
//  - scalars: one GPU thread.
// Pointwise, shape and gather nodes are inlined into their consumers, as on
// the CPU (partition.h's is_materialized decides). Every output gets constant
// bounds (shapes are static).
//
// It does not choose the numbers (the architecture files do), compile
// (compile_cuda.h), run anything, or change a result beyond float
// reassociation in reductions.
#pragma once

#include <Halide.h>

#include <string>

#include "lower_to_halide.h"
#include "tessera/graph.h"

namespace tessera {

// One GPU architecture's schedule parameters and cost-model numbers. The
// architecture files define one constant of this type each, documented
// there; nothing else in the engine is architecture-specific.
struct CudaArch {
  const char* name;  // the schedule set's name: "cuda_sm80", "cuda_sm90"
  int sm;            // compute capability the set is tuned for: 80, 90
  const char* gpu;   // the GPU the numbers describe

  // The machine.
  int sm_count;               // streaming multiprocessors
  int smem_per_sm_kb;         // shared memory per SM (KB)
  int smem_per_block_kb;      // shared memory one block may use (KB): 48, as
                              // Halide 14's CUDA runtime launches without the
                              // opt-in attribute that larger blocks need
  int max_threads_per_sm;     // resident threads per SM

  // Pointwise kernels.
  int pointwise_threads;      // threads per block
  int pointwise_width;        // threads along the innermost dim of a 2-D tile
  int pointwise_per_thread;   // elements per thread (rows of the tile, unrolled; at most)
  int vector;                 // contiguous elements per load where rows allow (pointwise, column sums)

  // Reductions along a row.
  int row_warps;              // at most this many warps share one long row
  int rows_per_block;         // rows (one warp each) per block for short rows
  int block_row_min;          // a row at least this long gets a whole block
  int min_per_lane;           // each lane reduces at least this many elements
                              // before more warps join a row

  // Reductions to one value, and across rows.
  int grid_threads;           // threads per block of a grid reduction
  int grid_blocks_per_sm;     // blocks per SM of a grid reduction's first level
  int min_per_thread;         // elements each thread reduces at least
  int column_unroll;          // loads each thread keeps in flight down a column

  // Matrix products (output tile per block = threads x registers per dim).
  int gemm_threads_n, gemm_threads_m;  // threads along columns n and rows m
  int gemm_regs_n, gemm_regs_m;        // register micro-tile per thread
  int gemm_tile_k;                     // k-tile staged in shared memory per step

  // Cost model (datasheet figures; the auto-scheduler and the compile
  // report's estimates read them).
  double dram_gbps;    // DRAM bandwidth, GB/s
  double fp32_tflops;  // FP32 CUDA-core rate (no tensor cores: Halide 14 has no
                       // tensor-core code generation), TFLOP/s
  double launch_us;    // cost of one kernel launch, microseconds
};

// Schedules every Func of `L` (the lowering of kernel graph `g`) for the GPU
// with `arch`'s parameters; `target` must have the CUDA feature. Returns one
// line per non-argument node, "  name (op): what it got", plus a line for
// fused outputs. Throws Halide errors as Halide does (compile_cuda wraps them).
std::string schedule_cuda(LoweredGraph& L, const Graph& g, const Halide::Target& target, const CudaArch& arch);

// The two schedule sets (cuda_sm80.cpp, cuda_sm90.cpp), with the same
// contract as schedule_cpu_x86 (cpu_x86.h).
const CudaArch& cuda_sm80_arch();
const CudaArch& cuda_sm90_arch();
std::string schedule_cuda_sm80(LoweredGraph& L, const Graph& g, const Halide::Target& target);
std::string schedule_cuda_sm90(LoweredGraph& L, const Graph& g, const Halide::Target& target);

// The architecture of Target::cuda_sm (80 or 90); throws Error otherwise.
const CudaArch& cuda_arch(int sm);

}  // namespace tessera
