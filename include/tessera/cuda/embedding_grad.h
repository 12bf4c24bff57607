// The gradient of an embedding table on CUDA, deterministic and parallel:
//   out[v, :] = sum of grad[p, :] over the positions p whose index is v
// (indices clamped to [0, vocab), as tessera's embedding_grad op), summed in
// position order in f32 and rounded to the tensors' type once, so that it
// equals the CPU's Halide scatter bit for bit. Rows no position names are
// zero.
//
// No atomics: one block per (position, column chunk) scans the indices; the
// block of a row's first position sums every position of that row, the
// others stop. Layout: indices [positions] (i32 or i64), grad
// [positions, dim] and out [vocab, dim], contiguous, f32 or bf16. Nothing
// here allocates; launches are checked and reported as tessera::Errors
// naming the shape. This does not handle f16 or other index types
// (embedding_grad_supports says which it takes).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "tessera/dtype.h"

namespace tessera::cuda {

struct EmbeddingGradShape {
  DType dtype = DType::f32;  // grad and out: f32 or bf16
  DType index = DType::i32;  // indices: i32 or i64
  int64_t positions = 0, vocab = 0, dim = 0;
  std::string text() const;  // "f32 [8192 x 768] -> [50304 x 768], i32 indices"
};

bool embedding_grad_supports(DType dtype, DType index);

void embedding_grad(const EmbeddingGradShape& s, const void* indices, const void* grad, void* out,
                    cudaStream_t stream);

}  // namespace tessera::cuda
