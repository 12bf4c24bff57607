// The per-target cost models (cost_model.h): the CPU's and the CUDA
// architectures' figures come from their schedule files; the per-op
// arithmetic estimates are here.
#include "cost_model.h"

#include "cuda_common.h"

namespace tessera {

CostModel cost_model(const Target& target) {
  if (target.cuda_sm == 0) return cpu_x86_cost_model();
  const CudaArch& a = cuda_arch(target.cuda_sm);
  return CostModel{a.name, a.dram_gbps, a.fp32_tflops * 1e3, a.launch_us};
}

double flops_per_element(const Node& node) {
  const std::string& op = node.op;
  if (op == "add" || op == "sub" || op == "mul" || op == "neg" || op == "abs" || op == "relu" || op == "maximum" ||
      op == "minimum" || op == "where" || op == "eq" || op == "ne" || op == "lt" || op == "le" || op == "gt" ||
      op == "ge" || op == "cast")
    return 1;
  if (op == "div" || op == "sqrt" || op == "rsqrt") return 4;
  if (op == "exp" || op == "log" || op == "tanh" || op == "sigmoid" || op == "silu" || op == "pow") return 20;
  if (op == "gelu" || op == "gelu_grad") return 30;
  if (op == "dropout") return 40;  // Philox rounds per element
  if (op == "define") return 10;   // a user body of unknown size
  return 0;                        // reshape, permute, slice, concat, broadcast, embedding: data movement
}

}  // namespace tessera
