// plan_report (plan.h): the kernels, schedules and memory plan of a graph
// for a target, as text. It compiles (JIT for the CPU, PTX for CUDA) to get
// the real schedules, and runs nothing. For CUDA it reports the plan that
// generated GPU variants run: products as cuBLASLt GEMMs, attention in the
// fused kernels or decomposed, quantized linears in their CUDA kernels or
// dequantized before their GEMMs (prepare_gpu_graph).
#include "tessera/plan.h"

#include "compile_cuda.h"
#include "dequantize_for_gemm.h"
#include "memory_plan.h"
#include "partition.h"

namespace tessera {

PlanReport plan_report(const Graph& graph, const Target& target) {
  PlanReport r;
  r.target = target;
  if (target.cuda_sm == 0) {
    const Executable exe = compile(graph, target);
    r.kernels = exe.schedule_text();
    r.memory = exe.memory_plan_text();
    r.peak_bytes = exe.memory_stats().planned_peak;
    r.without_reuse = exe.memory_stats().without_reuse;
    return r;
  }
  // As the PlanExecutor runs it: products in cuBLASLt, attention fused or decomposed.
  r.kernels = compile_cuda(graph, target, {.library_gemm = true}).text();
  const CostModel cost = cost_model(target);
  const Graph g = prepare_gpu_graph(graph);
  const MemoryPlan plan = plan_memory(g, partition(g, &cost, nullptr, true));
  r.memory = plan.text(g);
  r.peak_bytes = plan.peak;
  r.without_reuse = plan.total;
  return r;
}

}  // namespace tessera
