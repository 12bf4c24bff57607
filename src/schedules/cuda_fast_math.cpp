// f32 exp and division on the GPU's fast hardware paths (see cuda_fast_math.h).
#include "cuda_fast_math.h"

namespace tessera {

namespace {

using Halide::Expr;
using namespace Halide::Internal;

class FastMathOnGpu : public IRMutator {
  using IRMutator::visit;
  int gpu_loops_ = 0;  // GPU loops around the current node

  Stmt visit(const For* op) override {
    const bool gpu = op->device_api == Halide::DeviceAPI::CUDA;
    gpu_loops_ += gpu;
    Stmt s = IRMutator::visit(op);
    gpu_loops_ -= gpu;
    return s;
  }

  Expr visit(const Call* op) override {
    if (gpu_loops_ > 0 && op->name == "exp_f32" && op->args.size() == 1)
      return Call::make(op->type, "__nv_fast_expf", {mutate(op->args[0])}, Call::PureExtern);
    return IRMutator::visit(op);
  }

  Expr visit(const Div* op) override {
    // Vectors too (of a vectorized loop): Halide calls the function per lane.
    if (gpu_loops_ > 0 && op->type.element_of() == Halide::Float(32))
      return Call::make(op->type, "__nv_fast_fdividef", {mutate(op->a), mutate(op->b)}, Call::PureExtern);
    return IRMutator::visit(op);
  }
};

}  // namespace

void use_fast_math_on_gpu(Halide::Pipeline& pipeline) { pipeline.add_custom_lowering_pass(new FastMathOnGpu); }

}  // namespace tessera
