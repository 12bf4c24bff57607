// The default CPU schedule (see cpu_x86.h).
#include "cpu_x86.h"

#include <algorithm>
#include <sstream>

#include <thread>

#include "cost_model.h"
#include "op_registry.h"
#include "partition.h"
#include "target.h"
#include "tessera/error.h"
#include "user_def.h"

namespace tessera {

namespace {

using Halide::Func;
using Halide::TailStrategy;
using Halide::Var;

// Work per parallel task: small tasks drown in thread-pool overhead (per-row
// tasks of a 4096 x 1024 elementwise kernel ran 2.4x slower than 16K-element ones).
constexpr int64_t kTaskElements = 65536;
// Multiply-adds below which a narrow product runs on one thread (~10 us).
constexpr int64_t kTaskMacs = 1 << 20;

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
// `acc(n, m, batch...) += a(m, k) * b(k, n)` computed in register blocks of
// the tile's width x 4 rows, inside tiles of `tiles` (matmul_tiles, above:
// 3*vec columns where they divide N); `out` reads acc. Needs N >= 3*vec. For linear, whose weight is read as w[n, k]
// (strided along the vectorized n), `weight` is given: each tile copies its
// columns of the weight transposed, in parallel and while they are in cache
// (one copy at root before the product ran serially and cost a quarter of
// the 64x784x256 product).
//
// Operands computed inside the kernel (a transposed gradient, a ReLU mask)
// are given in `computed`: each is evaluated once at root rather than in the
// inner loop, where it would be recomputed for every tile of the other operand.
// Tile sizes of schedule_matmul for an output of N columns and M rows whose
// parallel tiles never compute the same element in two ways: Halide shifts
// a ragged last tile inwards, so it overlaps its neighbour, and the shared
// elements, computed at other register positions, may round differently
// (LLVM fuses some multiply-adds and not others); which task writes last
// then varies from run to run. So the column tile divides N, or is one
// vector (the overlap is then the same code in other lanes), and the row
// tile divides M, or spans all rows (the overlap stays inside one task).
struct MatmulTiles {
  int cols, rows;
};
MatmulTiles matmul_tiles(int64_t N, int64_t M, int vec) {
  MatmulTiles t{vec, 0};
  for (int w : {3 * vec, 2 * vec})
    if (N % w == 0) {
      t.cols = w;
      break;
    }
  const int64_t preferred = M <= 64 ? M / 4 * 4 : 32;
  for (int64_t r = preferred; r >= 4 && t.rows == 0; r -= 4)
    if (M % r == 0) t.rows = static_cast<int>(r);
  if (t.rows == 0) t.rows = static_cast<int>(M);
  return t;
}

void schedule_matmul(Func out, Func acc, Func weight, const std::vector<Func>& computed, int vec, MatmulTiles tiles) {
  std::vector<Var> args = out.args();
  Var n = args[0], m = args[1];
  Var ni("ni"), mi("mi"), mii("mii"), tile("tile");
  out.compute_root().tile(n, m, ni, mi, tiles.cols, tiles.rows).fuse(n, m, tile);
  for (size_t b = 2; b < args.size(); ++b) out.fuse(tile, args[b], tile);
  out.parallel(tile).split(mi, mi, mii, 4).vectorize(ni, vec).unroll(ni).unroll(mii);
  acc.compute_at(out, mi).vectorize(acc.args()[0], vec).unroll(acc.args()[1]);
  Var an = acc.args()[0], am = acc.args()[1];
  Halide::RVar k(acc.update(0).get_schedule().rvars()[0].var);
  acc.update(0).reorder(an, am, k).vectorize(an, vec).unroll(an).unroll(am);
  if (weight.defined()) {
    Func wt = weight.in(acc);
    std::vector<Var> wa = wt.args();  // (k, n) in Halide order
    wt.compute_at(out, tile).reorder_storage(wa[1], wa[0]).reorder(wa[1], wa[0]).vectorize(wa[1], vec, TailStrategy::GuardWithIf);
  }
  for (Func operand : computed) schedule_root(operand.in(acc), vec);
}

// A linear with fewer output features than a vector (a classifier head):
// vectorizing along n would leave every lane but a few idle, so the vectors
// run along the rows m instead. The input is copied at root with m innermost
// (computing its inlined producers once); each vector of rows accumulates in
// registers over k, reading one weight element per step. Row vectors are
// split into parallel tasks when there is enough work.
std::string schedule_narrow_linear(Func out, Func acc, Func input, const Shape& shape, int64_t K, int vec) {
  std::vector<Var> args = out.args();
  Var n = args[0], m = args[1], mo("mo"), mi("mi");
  out.compute_root().split(m, mo, mi, vec, TailStrategy::GuardWithIf).reorder(mi, n, mo).vectorize(mi);
  const int64_t rows = shape[shape.size() - 2];
  const bool threads = numel(shape) * K >= kTaskMacs && rows >= 4 * vec;
  if (threads) out.parallel(mo);
  acc.compute_at(out, n).vectorize(acc.args()[1], vec, TailStrategy::GuardWithIf);
  Halide::RVar k(acc.update(0).get_schedule().rvars()[0].var);
  acc.update(0).reorder(acc.args()[1], k).vectorize(acc.args()[1], vec, TailStrategy::GuardWithIf);
  Func xt = input.in(acc);
  std::vector<Var> xa = xt.args();  // (k, m, ...) in Halide order
  xt.compute_root().reorder_storage(xa[1], xa[0]).reorder(xa[1], xa[0]).vectorize(xa[1], vec, TailStrategy::GuardWithIf);
  return std::string("root, vectorized x") + std::to_string(vec) + " along rows" +
         (threads ? ", parallel over row vectors" : ", one thread") + ", input transposed at root";
}

// ---- weight-only quantized linears (quant_ops.h) -------------------------------------

bool is_quant_linear(const std::string& op) { return op == "linear_int8" || op == "linear_nf4"; }
bool is_quant_grad_input(const std::string& op) {
  return op == "linear_int8_grad_input" || op == "linear_nf4_grad_input";
}

// The constant extent of the first RVar of f's update (-1 if not constant).
int64_t reduction_extent(const Func& f) {
  const auto& rvars = f.function().update(0).schedule().rvars();
  const int64_t* e = rvars.empty() ? nullptr : Halide::Internal::as_const_int(rvars[0].extent);
  return e ? *e : -1;
}

// The Var of f named `name` (f's pure args).
Var arg_named(const Func& f, const std::string& name) {
  for (const Var& v : f.args())
    if (v.name() == name) return v;
  fail("schedule: Func ", f.name(), " has no dim ", name);
}

// A quantized linear with at most 8 rows (a GEMV): parallel tasks of 16
// output features; for each feature n, `vec` reduction lanes (pairs of NF4
// codes, or int8 elements) accumulate in registers (an rfactor of the
// accumulator, stored in registers) with the rows of x unrolled inside, so
// each vector of the packed weight is loaded and dequantized once for all
// rows of x; the lanes are summed at the end. Needs rank <= 2 and a
// reduction extent that is a multiple of vec. `shape` is the output's; `x`,
// when defined, is a computed x, put at root for the rfactor that reads it.
std::string schedule_quant_gemv(Func out, Func acc, const Shape& shape, int vec, Func x) {
  std::vector<Var> args = out.args();
  const int64_t N = shape.back(), M = shape.size() == 2 ? shape[0] : 1;
  Var n = args[0], no("no"), ni("ni");
  const int rows = 16;
  out.compute_root().bound(n, 0, static_cast<int>(N)).split(n, no, ni, rows, TailStrategy::GuardWithIf);
  if (args.size() == 2) out.bound(args[1], 0, static_cast<int>(M)).reorder(args[1], ni, no);
  out.parallel(no);
  acc.compute_at(out, ni);
  Halide::RVar r(acc.update(0).get_schedule().rvars()[0].var), ro("ro"), ri("ri");
  Var u("u");
  Func part = acc.update(0).split(r, ro, ri, vec).rfactor(ri, u);
  if (x.defined()) schedule_root(x.in(part), vec);  // after the rfactor: acc no longer reads x
  // The lanes innermost in storage too (rfactor appends them last); the
  // whole intermediate (vec x M floats) in registers.
  std::vector<Var> storage{arg_named(part, "u")};
  for (const Var& v : part.args())
    if (v.name() != "u") storage.push_back(v);
  part.compute_at(out, ni).reorder_storage(storage).store_in(Halide::MemoryType::Register);
  part.vectorize(arg_named(part, "u"));
  std::vector<Halide::VarOrRVar> order{arg_named(part, "u")};
  if (args.size() == 2) {
    Var pm = arg_named(part, acc.args()[1].name());
    part.unroll(pm);
    order.emplace_back(pm);
  }
  order.emplace_back(ro);
  order.emplace_back(arg_named(part, acc.args()[0].name()));
  Halide::Stage pu = part.update(0);
  pu.reorder(order).vectorize(arg_named(part, "u"));
  if (args.size() == 2) pu.unroll(arg_named(part, acc.args()[1].name()));
  return "root, GEMV: parallel tasks of " + std::to_string(rows) + " output features streaming the packed weight, " +
         std::to_string(vec) + " reduction lanes in registers, the " + std::to_string(M) +
         " rows of x unrolled inside (weight dequantized once for all)";
}

// dx = g @ W with at most 8 rows: parallel tasks of 32 vectors of columns k;
// each walks the packed rows n in order, dequantizing a vector of W[n, k]
// once for all rows of g (unrolled) and adding it into the task's
// accumulator (32 vectors x rows, in cache).
std::string schedule_quant_grad_streaming(Func out, Func acc, int64_t M, int vec) {
  std::vector<Var> args = out.args();
  Var k = args[0], ko("ko"), ki("ki");
  const int cols = 32 * vec;
  out.compute_root().split(k, ko, ki, cols, TailStrategy::GuardWithIf);
  if (args.size() == 2) out.reorder(ki, args[1], ko);
  out.parallel(ko).vectorize(ki, vec, TailStrategy::GuardWithIf);
  acc.compute_at(out, ko).vectorize(acc.args()[0], vec, TailStrategy::GuardWithIf);
  Halide::Stage au = acc.update(0);
  Var ak = acc.args()[0], ako("ako"), aki("aki");
  Halide::RVar rn(au.get_schedule().rvars()[0].var);
  au.split(ak, ako, aki, vec, TailStrategy::GuardWithIf);
  std::vector<Halide::VarOrRVar> order{aki};
  if (args.size() == 2) {
    Var am = acc.args()[1], amo("amo"), ami("ami");
    if (M > 1) {
      au.split(am, amo, ami, static_cast<int>(M), TailStrategy::GuardWithIf).unroll(ami);
      order.emplace_back(ami);
      order.emplace_back(amo);
    } else {
      order.emplace_back(am);
    }
  }
  order.emplace_back(ako);
  order.emplace_back(rn);
  au.reorder(order).vectorize(aki);
  return "root, streaming: parallel tasks of " + std::to_string(cols) +
         " columns, each walking the packed rows once, rows of g unrolled (weight dequantized once for all)";
}

// The stage of `stages` whose name ends in `suffix` (undefined if none).
Func stage_named(const std::vector<Func>& stages, const std::string& suffix) {
  for (const Func& f : stages) {
    const std::string n = f.name().substr(0, f.name().find('$'));
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) return f;
  }
  return Func();
}

// linear_int8/_nf4 (stages acc, deq[, absmax][, pairs]) and their grad_input ops.
std::string schedule_quant(LoweredGraph& L, const Graph& g, const Node& node, int vec) {
  Func out = L.funcs[node.id];
  const std::vector<Func>& st = L.stages[node.id];
  Func acc = st[0], deq = st[1];
  std::string how;
  if (Func absmax = stage_named(st, "_absmax"); absmax.defined()) {
    schedule_root(absmax, vec);
    how = "; absmax dequantized at root (one per block)";
  }
  // The packed NF4 weight u8[P, 1] is dense: its row stride is 1, which lets
  // the weight be loaded as vectors rather than gathered.
  if (node.op == "linear_nf4" || node.op == "linear_nf4_grad_input")
    for (size_t i = 0; i < L.arg_nodes.size(); ++i)
      if (L.arg_nodes[i] == node.inputs[1] && g.node(node.inputs[1]).type.rank() == 2) L.args[i].dim(1).set_stride(1);
  const Shape& s = node.type.shape;
  const int64_t cols = s.back(), M = numel(s) / cols;
  const bool rank_ok = s.size() <= 2;
  // The tiled schedules tile the last two output dims (leading dims are
  // fused with the tile index, as for matmul's batch).
  const int64_t tiled_rows = s.size() >= 2 ? s[s.size() - 2] : 0;
  Func first = L.funcs[node.inputs[0]];
  const bool computed = !g.node(node.inputs[0]).is_leaf();
  if (is_quant_linear(node.op)) {
    const int64_t R = reduction_extent(acc);
    if (M <= 8 && rank_ok && R > 0 && R % vec == 0) {
      return schedule_quant_gemv(out, acc, s, vec, computed ? first : Func()) + how;
    }
    if (M > 8 && tiled_rows >= 4 && cols >= 3 * vec) {
      const MatmulTiles t = matmul_tiles(cols, tiled_rows, vec);
      schedule_matmul(out, acc, deq, computed ? std::vector<Func>{first} : std::vector<Func>{}, vec, t);
      return "root, register-tiled, tiles " + std::to_string(t.cols) + "x" + std::to_string(t.rows) +
             ", the weight dequantized into each tile (transposed)" + how;
    }
  } else {
    if (M <= 8 && rank_ok) {
      if (computed) schedule_root(first.in(acc), vec);
      std::string s2 = schedule_quant_grad_streaming(out, acc, M, vec);
      if (Func pairs = stage_named(st, "_pairs"); pairs.defined()) {
        // Each packed row's run of the task's columns, decoded into a small
        // buffer with dense byte loads, then read as W[n, k] vectors.
        std::vector<Var> pa = pairs.args();  // (h, j, n) in Halide order
        Halide::RVar rn(acc.update(0).get_schedule().rvars()[0].var);
        pairs.compute_at(acc, rn).vectorize(pa[1], vec, TailStrategy::GuardWithIf).unroll(pa[0]);
        s2 += ", each row's codes decoded in byte pairs";
      }
      return s2 + how;
    }
    if (M > 8 && tiled_rows >= 4 && cols >= 3 * vec) {
      const MatmulTiles t = matmul_tiles(cols, tiled_rows, vec);
      schedule_matmul(out, acc, Func(), computed ? std::vector<Func>{first} : std::vector<Func>{}, vec, t);
      Func dt = deq.in(acc);
      dt.compute_at(out, Var("tile")).vectorize(dt.args()[0], vec, TailStrategy::GuardWithIf);
      return "root, register-tiled, tiles " + std::to_string(t.cols) + "x" + std::to_string(t.rows) +
             ", the weight's columns dequantized into each tile" + how;
    }
  }
  // Other shapes: the accumulator vectorized along the output features, the
  // weight dequantized inline.
  schedule_root(acc, vec, s);
  return schedule_root(out, vec, s) + ", weight dequantized inline" + how;
}

// The outputs of a kernel with several (pointwise nodes of one shape, see
// partition.h): each becomes a copy of its node's Func, scheduled at root
// alike, and all are computed with the last one, down to the innermost loop,
// so that one pass over the data reads their common inputs once. The nodes
// stay inlined: a node that another output reads is recomputed there.
std::string schedule_fused_outputs(LoweredGraph& L, const Graph& g, int vec) {
  const Shape& shape = g.node(L.output_nodes.back()).type.shape;
  std::string how;
  copy_outputs(L);
  for (Func out : L.outputs) how = schedule_root(out, vec, shape);
  // The innermost loop all have: the vectorized dim, or for rank 1 split
  // into tasks, the loop inside a task.
  Func last = L.outputs.back();
  Var inner = last.args()[0];
  if (last.args().size() == 1)
    for (const Halide::Internal::Split& s : last.function().definition().schedule().splits())
      if (s.old_var == inner.name() && s.outer == inner.name() + ".task") inner = Var("in_task");
  // Each output after the one that follows it: the last first, then back to
  // the first (memory_plan.h's in-place updates rely on this order).
  for (size_t i = L.outputs.size() - 1; i-- > 0;) L.outputs[i].compute_with(L.outputs[i + 1], inner);
  return "  outputs: " + how + ", all in one loop nest\n";
}

// Whether every update of f writes at its own pure Vars (no scatter), so
// that its pure loops may be vectorized and split into parallel tasks.
bool updates_write_pure(const Func& f) {
  const std::vector<std::string>& pure = f.function().args();
  for (const Halide::Internal::Definition& u : f.function().updates())
    for (size_t d = 0; d < u.args().size(); ++d) {
      const Halide::Internal::Variable* v = u.args()[d].as<Halide::Internal::Variable>();
      if (!v || d >= pure.size() || v->name != pure[d]) return false;
    }
  return true;
}

}  // namespace

std::string schedule_cpu_x86(LoweredGraph& L, const Graph& g, const Halide::Target& target) {
  const int vec = target.natural_vector_size<float>();
  // A kernel with several outputs (see partition.h) computes them in one
  // fused loop; the nodes themselves are inlined into it.
  const bool fused = L.outputs.size() > 1;
  std::vector<bool> is_output(g.nodes.size(), false);
  if (!fused)
    for (int o : L.output_nodes) is_output[o] = true;
  std::ostringstream log;
  for (const Node& node : g.nodes) {
    Func f = L.funcs[node.id];
    const OpDef& def = op_def(node.op);
    const bool heavy = is_materialized(node);
    std::string what;
    if ((is_quant_linear(node.op) || is_quant_grad_input(node.op)) && L.stages[node.id].size() >= 2)
      what = schedule_quant(L, g, node, vec);
    if (what.empty() && (node.op == "matmul" || node.op == "linear") && !L.stages[node.id].empty() && node.type.rank() >= 2) {
      const Shape& s = node.type.shape;
      int64_t N = s[s.size() - 1], M = s[s.size() - 2];
      if (N >= 3 * vec && M >= 32) {
        // Up to 64 rows, one tile spans them all: each weight column block is
        // transposed once.
        const MatmulTiles t = matmul_tiles(N, M, vec);
        Func weight = node.op == "linear" ? L.funcs[node.inputs[1]] : Func();
        std::vector<Func> computed;
        for (int i = 0; i < (node.op == "linear" ? 1 : 2); ++i)
          if (!g.node(node.inputs[i]).is_leaf()) computed.push_back(L.funcs[node.inputs[i]]);
        schedule_matmul(f, L.stages[node.id][0], weight, computed, vec, t);
        what = "root, register-tiled matmul, tiles " + std::to_string(t.cols) + "x" + std::to_string(t.rows) +
               " (blocks " + std::to_string(t.cols) + "x4)" + (weight.defined() ? ", weight transposed per tile" : "") +
               (computed.empty() ? "" : ", computed operands at root");
      }
    }
    if (what.empty() && node.op == "linear" && !L.stages[node.id].empty() && node.type.rank() >= 2 &&
        node.type.shape.back() < vec && node.type.shape[node.type.rank() - 2] >= vec) {
      what = schedule_narrow_linear(f, L.stages[node.id][0], L.funcs[node.inputs[0]], node.type.shape,
                                    g.node(node.inputs[0]).type.shape.back(), vec);
    }
    if (what.empty() && node.op == "linear" && !L.stages[node.id].empty()) {
      // A small linear: the accumulator is vectorized along n, across rows
      // of the weight; a transposed copy turns those gathers into loads.
      Func acc = L.stages[node.id][0];
      schedule_root(acc, vec, node.type.shape);
      Func wt = L.funcs[node.inputs[1]].in(acc);
      std::vector<Var> wa = wt.args();  // (k, n) in Halide order
      wt.compute_root().reorder_storage(wa[1], wa[0]);
      what = schedule_root(f, vec, node.type.shape) + ", weight transposed at root";
    }
    if (what.empty()) {
      for (Func s : L.stages[node.id]) {
        if (def.kind == OpKind::gather) schedule_scatter(s, vec, node.type.shape);  // scatter tables: the node's shape
        else if (!updates_write_pure(s)) s.compute_root();  // e.g. define_grad's scattering adjoints: serial
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
  if (fused) log << schedule_fused_outputs(L, g, vec);
  return log.str();
}

// The cost model of the CPU schedule (cost_model.h). Estimates for a
// server core: DRAM bandwidth ~10 GB/s per core (this 2-core VM's fused
// elementwise kernels reached 31.5 GB/s), two vector FMAs per cycle at
// ~2.5 GHz, and a few microseconds to wake the thread pool for a kernel.
CostModel cpu_x86_cost_model() {
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int lanes = halide_target(Target::host()).natural_vector_size<float>();
  return CostModel{"cpu_x86", 10.0 * cores, 2.0 * 2 * lanes * 2.5 * cores, 3.0};
}

}  // namespace tessera
