// run_gemm_step (include/tessera/cuda/gemm_step.h): arena offsets to checked
// device pointers, then CublasLtGemm::run. Errors gain the step's name.
#include "tessera/cuda/gemm_step.h"

#include "float_dtype.h"
#include "tessera/error.h"

namespace tessera::cuda {

void run_gemm_step(CublasLtGemm& gemm, DeviceArena& arena, const GemmStep& step) {
  const GemmShape& s = step.shape;
  const char* operand = nullptr;
  try {
    s.validate();
    operand = "A";
    GemmArgs args;
    args.alpha = step.alpha, args.beta = step.beta;
    args.a = arena.at(step.a, s.a_bytes());
    operand = "B";
    args.b = arena.at(step.b, s.b_bytes());
    operand = "C";
    args.c = arena.at(step.c, s.c_bytes());
    operand = "bias";
    if (step.bias != GemmStep::kNoBias)
      args.bias = arena.at(step.bias, static_cast<size_t>(s.n) * float_dtype_size(s.dtype));
    operand = nullptr;
    gemm.run(s, args);
  } catch (const Error& e) {
    if (operand) fail(step.name, ": operand ", operand, " of ", s.describe(), ": ", e.what());
    fail(step.name, ": ", e.what());
  }
}

}  // namespace tessera::cuda
