// plan_report (plan.h): the kernels, schedules and memory plan of a graph
// for a target, as text. It compiles (JIT for the CPU, PTX for CUDA) to get
// the real schedules, and runs nothing.
#include "tessera/plan.h"

#include "compile_cuda.h"
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
  r.kernels = compile_cuda(graph, target).text();
  const CostModel cost = cost_model(target);
  const MemoryPlan plan = plan_memory(graph, partition(graph, &cost));
  r.memory = plan.text(graph);
  r.peak_bytes = plan.peak;
  r.without_reuse = plan.total;
  return r;
}

}  // namespace tessera
