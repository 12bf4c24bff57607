// The default CPU schedule (see cpu_x86.h).
#include "cpu_x86.h"

#include <algorithm>
#include <sstream>

#include "op_registry.h"
#include "partition.h"
#include "user_def.h"

namespace tessera {

namespace {

using Halide::Func;
using Halide::TailStrategy;
using Halide::Var;

// Work per parallel task: small tasks drown in thread-pool overhead (per-row
// tasks of a 4096 x 1024 elementwise kernel ran 2.4x slower than 16K-element ones).
constexpr int64_t kTaskElements = 65536;

// Small Funcs: vectorized, on the calling thread.
std::string schedule_serial(Func f, int vec) {
  f.compute_root();
  std::vector<Var> args = f.args();
  if (!args.empty()) {
    f.vectorize(args[0], vec, TailStrategy::GuardWithIf);
    for (int u = 0; u < f.num_update_definitions(); ++u) f.update(u).vectorize(args[0], vec, TailStrategy::GuardWithIf);
  }
  return "root, vectorized x" + std::to_string(vec) + ", one thread";
}

// A scatter stage (an OpKind::gather op's stage whose update writes at
// data-dependent rows, e.g. embedding_grad's table): the scattered dim and the
// RDom can be neither split nor parallelized (two positions may hit one row),
// so only the contiguous dim is vectorized, inside the loop over positions.
// The pure (zero) definition runs in parallel tasks of rows. `shape` is the
// stage's row-major extent when known, else empty.
std::string schedule_scatter(Func f, int vec, const Shape& shape = {}) {
  f.compute_root();
  std::vector<Var> args = f.args();
  if (args.empty()) return "root, a scalar";
  f.vectorize(args[0], vec, TailStrategy::GuardWithIf);
  if (args.size() == 2 && shape.size() == 2) {
    const int64_t rows = std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, shape[1]));
    if (rows < shape[0]) {
      Var task("task"), in_task("in_task");
      f.split(args[1], task, in_task, static_cast<int>(rows), TailStrategy::GuardWithIf).parallel(task);
    }
  }
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    std::vector<Halide::VarOrRVar> order{args[0]};
    for (const auto& rv : f.update(u).get_schedule().rvars()) order.emplace_back(Halide::RVar(rv.var));
    f.update(u).reorder(order).vectorize(args[0], vec, TailStrategy::GuardWithIf);
  }
  return "root scatter, vectorized x" + std::to_string(vec) + ", one thread";
}

// Vectorize the innermost dimension and run the outermost in parallel tasks
// of about kTaskElements, on the pure definition and on every update. `shape`
// (row-major) is the Func's extent when known, else empty (tasks of one
// outermost index). Returns what it did, for the printed schedule.
std::string schedule_root(Func f, int vec, const Shape& shape = {}) {
  f.compute_root();
  std::vector<Var> args = f.args();
  int64_t rows_per_task = 1;
  if (!shape.empty() && args.size() >= 2) {
    rows_per_task = std::max<int64_t>(1, kTaskElements / std::max<int64_t>(1, numel(shape) / shape[0]));
    if (rows_per_task >= shape[0]) return schedule_serial(f, vec);  // one task's worth: no threads
  } else if (!shape.empty() && args.size() == 1 && shape[0] >= 2 * kTaskElements) {
    rows_per_task = kTaskElements;  // rank 1: chunks of the only dim
  }
  auto apply = [&](auto stage) {
    if (args.size() >= 2 || rows_per_task > 1) {
      Var outer = args.back();
      if (rows_per_task > 1) {
        Var task("task"), in_task("in_task");
        stage.split(outer, task, in_task, static_cast<int>(rows_per_task), TailStrategy::GuardWithIf).parallel(task);
        if (args.size() == 1) outer = in_task;
      } else {
        stage.parallel(outer);
      }
      if (args.size() == 1) {
        stage.vectorize(outer, vec, TailStrategy::GuardWithIf);
        return;
      }
    }
    if (!args.empty()) stage.vectorize(args[0], vec, TailStrategy::GuardWithIf);
  };
  apply(f);
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    // Halide puts an update's reduction loops outside its pure loops; then a
    // parallel pure loop would start its tasks once per reduction step. Put
    // the reduction inside: the innermost pure dim (vectorized) stays
    // innermost, the reduction next, the other pure dims outside.
    Halide::Stage update = f.update(u);
    std::vector<Halide::VarOrRVar> order;
    if (!args.empty()) order.emplace_back(args[0]);
    for (const Halide::Internal::ReductionVariable& rv : update.get_schedule().rvars())
      order.emplace_back(Halide::RVar(rv.var));
    for (size_t d = 1; d < args.size(); ++d) order.emplace_back(args[d]);
    if (order.size() > 1) update.reorder(order);
    apply(update);
  }
  if (args.empty()) return "root, a scalar";
  std::ostringstream os;
  os << "root, vectorized x" << vec;
  if (args.size() >= 2 || rows_per_task > 1)
    os << ", parallel tasks of " << rows_per_task << (args.size() == 1 ? " elements" : " outermost rows");
  return os.str();
}

// The register-tiled matrix product of Halide's own performance test:
// `acc(n, m, batch...) += a(m, k) * b(k, n)` computed in 3*vec x 4 register
// blocks inside 3*vec x 32 tiles; `out` reads acc. Needs N >= 3*vec and M >= 32.
// For linear, whose weight is read as w[n, k] (strided along the vectorized
// n), `weight` is given: a transposed copy is made once at root so that the
// inner loop loads contiguous vectors.
void schedule_matmul(Func out, Func acc, Func weight, int vec) {
  std::vector<Var> args = out.args();
  Var n = args[0], m = args[1];
  Var ni("ni"), mi("mi"), mii("mii"), tile("tile");
  out.compute_root().tile(n, m, ni, mi, 3 * vec, 32).fuse(n, m, tile);
  for (size_t b = 2; b < args.size(); ++b) out.fuse(tile, args[b], tile);
  out.parallel(tile).split(mi, mi, mii, 4).vectorize(ni, vec).unroll(ni).unroll(mii);
  acc.compute_at(out, mi).vectorize(acc.args()[0], vec).unroll(acc.args()[1]);
  Var an = acc.args()[0], am = acc.args()[1];
  Halide::RVar k(acc.update(0).get_schedule().rvars()[0].var);
  acc.update(0).reorder(an, am, k).vectorize(an, vec).unroll(an).unroll(am);
  if (weight.defined()) {
    Func wt = weight.in(acc);
    std::vector<Var> wa = wt.args();  // (k, n) in Halide order
    wt.compute_root().reorder_storage(wa[1], wa[0]).reorder(wa[1], wa[0]).vectorize(wa[1], vec, TailStrategy::GuardWithIf);
  }
}

}  // namespace

std::string schedule_cpu_x86(LoweredGraph& L, const Graph& g, const Halide::Target& target) {
  const int vec = target.natural_vector_size<float>();
  std::vector<bool> is_output(g.nodes.size(), false);
  for (int o : L.output_nodes) is_output[o] = true;
  std::ostringstream log;
  for (const Node& node : g.nodes) {
    Func f = L.funcs[node.id];
    const OpDef& def = op_def(node.op);
    const bool heavy = is_materialized(node);
    std::string what;
    if ((node.op == "matmul" || node.op == "linear") && !L.stages[node.id].empty() && node.type.rank() >= 2) {
      const Shape& s = node.type.shape;
      int64_t N = s[s.size() - 1], M = s[s.size() - 2];
      if (N >= 3 * vec && M >= 32) {
        Func weight = node.op == "linear" ? L.funcs[node.inputs[1]] : Func();
        schedule_matmul(f, L.stages[node.id][0], weight, vec);
        what = "root, register-tiled matmul " + std::to_string(3 * vec) + "x32 (blocks " +
               std::to_string(3 * vec) + "x4)";
      }
    }
    if (what.empty() && node.op == "linear" && !L.stages[node.id].empty()) {
      // A small linear: the accumulator is vectorized along n, across rows
      // of the weight; a transposed copy turns those gathers into loads.
      Func acc = L.stages[node.id][0];
      schedule_root(acc, vec);
      Func wt = L.funcs[node.inputs[1]].in(acc);
      std::vector<Var> wa = wt.args();  // (k, n) in Halide order
      wt.compute_root().reorder_storage(wa[1], wa[0]);
      what = schedule_root(f, vec, node.type.shape) + ", weight transposed at root";
    }
    if (what.empty()) {
      for (Func s : L.stages[node.id]) {
        if (def.kind == OpKind::gather) schedule_scatter(s, vec, node.type.shape);  // scatter tables: the node's shape
        else schedule_root(s, vec);
      }
      if (heavy || is_output[node.id]) {
        what = schedule_root(f, vec, node.type.shape);
      } else {
        what = node.is_leaf() && node.op != "constant" ? "argument" : "inline";
      }
    }
    if (what != "argument") log << "  " << node.name << " (" << node.op << "): " << what << "\n";
  }
  // Outputs that are copies of leaves or of another output.
  for (size_t i = 0; i < L.outputs.size(); ++i)
    if (!L.outputs[i].function().same_as(L.funcs[L.output_nodes[i]].function()))
      schedule_root(L.outputs[i], vec, g.node(L.output_nodes[i]).type.shape);
  return log.str();
}

}  // namespace tessera
