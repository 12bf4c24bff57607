// library_embedding_grad: which embedding_grad nodes a GPU plan runs in the
// CUDA embedding-gradient kernel (include/tessera/cuda/embedding_grad.h)
// instead of a Halide scatter, and the call each such kernel is. A Halide
// scatter that stays deterministic adds the positions one after another
// (GPT-2 small's token table: 8192 positions, 2.2 ms on an H200); the
// kernel sums each row in parallel, in the same order.
//
// The kernel takes f32 or bf16 rows and i32 or i64 indices. partition()
// materializes the operands of the nodes it takes and gives each node a
// kernel of its own. This decides nothing about speed and runs nothing: the
// PlanExecutor does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "partition.h"

namespace tessera {

// Whether embedding_grad node `n` of `g` runs in the CUDA kernel.
bool embedding_grad_kernel_takes(const Graph& g, const Node& n);

struct LibraryEmbeddingGrad {
  DType dtype = DType::f32;  // grad and result
  DType index = DType::i32;
  int64_t positions = 0, vocab = 0, dim = 0;
  int indices = -1, grad = -1;  // positions in Kernel::inputs

  std::string text() const;  // "embedding gradient f32 [8192 x 768] -> [50304 x 768], i32 indices"
};

// The embedding-gradient call that `kernel` is, or nothing.
std::optional<LibraryEmbeddingGrad> match_library_embedding_grad(const Kernel& kernel);

}  // namespace tessera
