// The CUDA schedule engine (see cuda_common.h): the GPU schedules of every
// kind of Func, parameterized by a CudaArch. The architecture files supply
// the numbers; this file never names an architecture, compiles nothing and
// touches no op definition (it only schedules the Funcs it is given).
#include "cuda_common.h"

#include <algorithm>
#include <functional>
#include <sstream>

#include "halide_util.h"
#include "memory_plan.h"
#include "partition.h"
#include "tessera/error.h"

namespace tessera {

namespace {

using Halide::Func;
using Halide::LoopLevel;
using Halide::RVar;
using Halide::Stage;
using Halide::TailStrategy;
using Halide::Var;
using Halide::VarOrRVar;

constexpr TailStrategy kGuard = TailStrategy::GuardWithIf;
constexpr int kWarp = 32;
// CUDA's limit on a grid's y and z dimensions.
constexpr int64_t kMaxGridY = 65535;
// Pointwise rows at least this many times a tile's width times the
// elements per thread get tiles along the rows (tile_stage).
constexpr int64_t kWideRowTiles = 4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
int64_t product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t e : v) p *= e;
  return p;
}

// Halide-order extents (innermost first) of a row-major shape.
std::vector<int64_t> halide_extents(const Shape& s) { return std::vector<int64_t>(s.rbegin(), s.rend()); }

// Tells Halide what every buffer of a CUDA pipeline is: the executor hands
// each tensor over dense, at its static shape, from 0, at an arena offset
// (a multiple of kArenaAlignment bytes). Index arithmetic then folds to
// constants, and loads of vectorized stages become vector loads (PTX needs
// them aligned to their size). A caller passing anything else gets Halide's
// error, not a wrong result.
void pin_dense(Halide::OutputImageParam b, const std::vector<int64_t>& ext) {
  int64_t stride = 1;
  for (size_t d = 0; d < ext.size() && static_cast<int>(d) < b.dimensions(); ++d) {
    b.dim(static_cast<int>(d)).set_bounds(0, static_cast<int>(ext[d])).set_stride(static_cast<int>(stride));
    stride *= ext[d];
  }
  b.set_host_alignment(static_cast<int>(kArenaAlignment));
}

// The RVars of an update, innermost first. Those made by splitting
// ("r$x.ro") are named by their last part, as Halide's scheduling calls
// expect.
std::vector<RVar> rvars_of(Stage s) {
  std::vector<RVar> r;
  for (const Halide::Internal::ReductionVariable& rv : s.get_schedule().rvars())
    r.emplace_back(rv.var.substr(rv.var.rfind('.') + 1));
  return r;
}

// Fuses the RVars of an update into one loop (innermost first) and returns it.
RVar fuse_rvars(Stage s) {
  std::vector<RVar> rv = rvars_of(s);
  RVar r = rv[0];
  for (size_t i = 1; i < rv.size(); ++i) {
    RVar fused("rf" + std::to_string(i));
    s.fuse(r, rv[i], fused);
    r = fused;
  }
  return r;
}

// A stage's name for the printed schedule: its role ("max", "sum", "acc"),
// without the node prefix that lower_to_halide gives every Func and without
// Halide's uniquifying "$n" suffix.
std::string short_name(const Func& f) {
  std::string n = f.name();
  n = n.substr(0, n.find('$'));
  const size_t us = n.rfind('_');
  return us == std::string::npos ? n : n.substr(us + 1);
}

// Whether update `u` of f writes at its own pure vars (no scatter).
bool writes_pure(const Func& f, int u) {
  const std::vector<std::string>& pure = f.function().args();
  const Halide::Internal::Definition& d = f.function().update(u);
  if (d.args().size() != pure.size()) return false;
  for (size_t i = 0; i < pure.size(); ++i) {
    const Halide::Internal::Variable* v = d.args()[i].as<Halide::Internal::Variable>();
    if (!v || v->name != pure[i]) return false;
  }
  return true;
}

// Whether f has exactly one update, writing at its pure vars, that Halide can
// prove associative and commutative: then its reduction may be split
// (rfactor) and the parts combined in any order.
bool splittable(const Func& f) {
  if (f.num_update_definitions() != 1 || !writes_pure(f, 0)) return false;
  if (f.function().update(0).schedule().rvars().empty()) return false;
  const Halide::Internal::Definition& d = f.function().update(0);
  Halide::Internal::AssociativeOp op = Halide::Internal::prove_associativity(f.name(), d.args(), d.values());
  return op.associative() && op.commutative();
}

// ---- pointwise tiles -------------------------------------------------------------

// What tile_stage did: a description and the innermost loop of the tile,
// where a per-element producer can be computed.
struct Tiled {
  std::string how;
  Var inner;
};

// Puts one stage (a pure definition, or an update writing at its pure vars,
// whose reduction loops then run serially inside each thread) of a Func with
// pure `args` on the GPU. `ext` gives the Func's Halide-order extents, or is
// empty when unknown. Rows of at least a tile's width get 2-D tiles over the
// two innermost dims (the others fused into the second); otherwise all dims
// are fused into one flat loop. Each thread takes `per_thread` elements,
// strided by the block so that neighbouring threads touch neighbouring
// elements: down its column in a 2-D tile, or along its row when rows are
// long. With `vector` > 1 (and a known innermost extent that it divides)
// the innermost dim is first split into vectors of `vector` neighbouring
// elements, each loaded and stored at once, and the tile is laid over the
// vectors.
Tiled tile_stage(Stage s, std::vector<Var> args, std::vector<int64_t> ext, int per_thread, const CudaArch& a,
                 int vector = 1) {
  if (args.empty()) {
    s.gpu_single_thread();
    return {"one GPU thread", Var()};
  }
  const bool known = ext.size() == args.size();
  // Vectors of `vector` contiguous elements: the tile is laid out over them.
  Var xv("xv");
  if (!known || ext[0] % vector != 0) vector = 1;
  if (vector > 1) {
    Var xo("xo");
    s.split(args[0], xo, xv, vector, TailStrategy::RoundUp);
    args[0] = xo;
    ext[0] /= vector;
  }
  const int64_t inner = known ? ext[0] : -1;
  const int64_t total = known ? product(ext) : -1;
  const int threads = a.pointwise_threads;
  // Several elements per thread keep more loads in flight, but not at the
  // cost of a grid smaller than one block per SM (a reduction's partials).
  while (known && per_thread > 1 && ceil_div(total, static_cast<int64_t>(threads) * per_thread) < a.sm_count)
    per_thread /= 2;
  bool two_d = args.size() >= 2 && (!known || inner >= a.pointwise_width || (inner >= kWarp && inner % kWarp == 0));
  int tx = a.pointwise_width, ty = threads / a.pointwise_width;
  // Long rows: a thread's elements lie along its row, tx apart (else down
  // its column, ty rows apart), so that a block reads long stretches of few
  // rows rather than short pieces of many rows far apart in memory.
  bool along_rows = false;
  if (two_d && known) {
    tx = static_cast<int>(std::min<int64_t>(a.pointwise_width, round_up(inner, kWarp)));
    // Rather a narrower tile that divides the row than a ragged last one.
    for (int w = tx; inner % tx != 0 && w >= 2 * kWarp; w -= kWarp)
      if (inner % w == 0) tx = w;
    ty = threads / tx;
    along_rows = per_thread > 1 && inner >= static_cast<int64_t>(tx) * per_thread * kWideRowTiles;
    if (ceil_div(total / inner, static_cast<int64_t>(ty) * (along_rows ? 1 : per_thread)) > kMaxGridY) two_d = false;
  }
  // An update's reduction loops go innermost, inside each thread (rfactor
  // may have left some outside the pure loops).
  std::vector<VarOrRVar> order;
  for (RVar r : rvars_of(s)) order.emplace_back(r);
  if (vector > 1) {
    order.emplace_back(xv);
    s.vectorize(xv);
  }
  std::ostringstream how;
  if (vector > 1) how << vector << "-wide vectors, ";
  auto innermost_first = [&](std::initializer_list<VarOrRVar> loops) {
    std::vector<VarOrRVar> all = order;
    all.insert(all.end(), loops.begin(), loops.end());
    s.reorder(all);
  };
  if (two_d) {
    Var y = args[1];
    for (size_t d = 2; d < args.size(); ++d) {
      Var fused("fy" + std::to_string(d));
      s.fuse(y, args[d], fused);
      y = fused;
    }
    Var bx("bx"), txv("tx"), by("by"), yi("yi"), tyv("ty"), e("e"), xi("xi");
    if (along_rows) {
      s.split(args[0], bx, xi, tx * per_thread, kGuard).split(xi, e, txv, tx).unroll(e);
      s.split(y, by, tyv, ty, kGuard);
      innermost_first({e, txv, tyv, bx, by});
      s.gpu_blocks(bx, by).gpu_threads(txv, tyv);
      how << "GPU tiles " << tx * per_thread << "x" << ty << " (" << tx * ty << " threads, " << per_thread
          << " elements of a row each)";
      return {how.str(), e};
    }
    s.split(args[0], bx, txv, tx, kGuard);
    if (per_thread > 1) {
      s.split(y, by, yi, ty * per_thread, kGuard).split(yi, e, tyv, ty).unroll(e);
      innermost_first({e, txv, tyv, bx, by});
    } else {
      s.split(y, by, tyv, ty, kGuard);
      innermost_first({txv, tyv, bx, by});
    }
    s.gpu_blocks(bx, by).gpu_threads(txv, tyv);
    how << "GPU tiles " << tx << "x" << ty * per_thread << " (" << tx * ty << " threads";
    if (per_thread > 1) how << ", " << per_thread << " rows each";
    how << ")";
    return {how.str(), per_thread > 1 ? e : txv};
  }
  Var flat = args[0];
  for (size_t d = 1; d < args.size(); ++d) {
    Var fused("ff" + std::to_string(d));
    s.fuse(flat, args[d], fused);
    flat = fused;
  }
  int t = threads;
  if (known && total < t) t = static_cast<int>(round_up(total, kWarp));
  const int per = known && total <= static_cast<int64_t>(t) * per_thread / 2 ? 1 : per_thread;
  Var b("b"), tv("t"), ti("ti"), e("e");
  if (per > 1) {
    s.split(flat, b, ti, t * per, kGuard).split(ti, e, tv, t).unroll(e);
    innermost_first({e, tv, b});
  } else {
    s.split(flat, b, tv, t, kGuard);
    innermost_first({tv, b});
  }
  s.gpu_blocks(b).gpu_threads(tv);
  how << "GPU flat, " << t << " threads" << (per > 1 ? " x" + std::to_string(per) + " elements" : "");
  return {how.str(), per > 1 ? e : tv};
}

// A scattering update (it writes at data-dependent positions in some dims):
// parallel over the pure dims it writes at their own position, which no two
// iterations of the others can share, the rest (positions) serial inside each
// thread in order; with no such dim, the whole update on one GPU thread.
std::string scatter_update(Func f, int u, const CudaArch& a) {
  Stage s = f.update(u);
  const std::vector<Var> pure = f.args();
  const Halide::Internal::Definition& d = f.function().update(u);
  std::vector<Var> free_dims;
  for (size_t i = 0; i < d.args().size() && i < pure.size(); ++i) {
    const Halide::Internal::Variable* v = d.args()[i].as<Halide::Internal::Variable>();
    if (v && v->name == pure[i].name()) free_dims.push_back(pure[i]);
  }
  if (free_dims.empty()) {
    s.gpu_single_thread();
    return "serial on one GPU thread";
  }
  Var pb("pb"), pt("pt");
  const int t = a.pointwise_threads;
  s.split(free_dims[0], pb, pt, t, kGuard);
  std::vector<VarOrRVar> order;
  for (RVar r : rvars_of(s)) order.emplace_back(r);
  for (size_t i = 1; i < free_dims.size(); ++i) order.emplace_back(free_dims[i]);
  order.emplace_back(pt);
  order.emplace_back(pb);
  s.reorder(order).gpu_blocks(pb).gpu_threads(pt);
  return "parallel over dim " + free_dims[0].name() + " (" + std::to_string(t) +
         " threads), serial over the scattered positions";
}

// Computes f at root on the GPU: its pure definition tiled, each update
// tiled over its pure vars (reductions serial in each thread) or, if it
// scatters, as scatter_update says. `ext`: Halide-order extents or empty.
// `vectorize`: a pure f in vectors of CudaArch::vector elements (only where
// nothing is computed at the returned loop: its stages would be computed a
// vector at a time).
Tiled root_on_gpu(Func f, const std::vector<int64_t>& ext, const CudaArch& a, bool vectorize = false) {
  f.compute_root();
  const std::vector<Var> args = f.args();
  // Vectors keep the elements per thread (a thread's loads get wider, not more).
  const int vector = vectorize && f.num_update_definitions() == 0 ? a.vector : 1;
  Tiled t = tile_stage(f, args, ext, std::max(1, a.pointwise_per_thread / vector), a, vector);
  std::string how = "root, " + t.how;
  for (int u = 0; u < f.num_update_definitions(); ++u) {
    std::string update;
    if (writes_pure(f, u)) {
      update = tile_stage(f.update(u), args, ext, 1, a).how;
      if (!f.function().update(u).schedule().rvars().empty()) update += ", reduction serial per thread";
    } else {
      update = scatter_update(f, u, a);
    }
    how += "; update " + std::to_string(u) + ": " + update;
  }
  t.how = how;
  return t;
}

// An internal stage (not a pipeline output) at root. When its updates write
// at its pure vars, each element is reduced by one thread in registers: a
// wrapper of the stage (which all its consumers then read) is tiled at root
// and the stage itself computed per element inside it, so initialization
// and reduction are one GPU kernel. Scattering stages go to root_on_gpu.
Tiled stage_on_gpu(Func s, const std::vector<int64_t>& ext, const CudaArch& a) {
  bool pure_updates = s.num_update_definitions() > 0;
  for (int u = 0; u < s.num_update_definitions(); ++u) pure_updates = pure_updates && writes_pure(s, u);
  if (!pure_updates) return root_on_gpu(s, ext, a);
  Func per_element = s.in();
  Tiled t = root_on_gpu(per_element, ext, a);
  s.compute_at(per_element, t.inner);
  t.how += ", each element reduced by its thread";
  return t;
}

// ---- reductions ------------------------------------------------------------------

// Computes reduction stage s at `at`, a block loop, its reduction over its
// innermost RVar spread across the 32 lanes of a warp (rfactor; the lane
// partials in registers, combined through warp shuffles) and, with
// warps > 1, across the block's warps (partials in shared memory). The row
// results live in shared memory. With `row_dim` >= 0 the block owns several
// rows, s's dim `row_dim` indexing them: each row then gets one warp (the
// rows are the y threads). With `vector` > 1 each lane reads `vector`
// neighbouring elements at a time: a vector of partials per lane (a further
// rfactor, in registers), summed in the lane before the shuffles. A stage
// that cannot be split runs serially.
std::string reduce_at(Func s, LoopLevel at, int warps, int row_dim, int vector) {
  s.compute_at(at);
  if (!splittable(s)) return short_name(s) + " serial";
  const std::vector<Var> sargs = s.args();
  RVar r = rvars_of(s.update())[0];
  RVar ro("ro"), rl("rl"), ri("ri"), rv("rv");
  Var lane("lane");
  if (vector > 1) s.update().split(r, ro, ri, kWarp * vector, kGuard).split(ri, rl, rv, vector);
  else s.update().split(r, ro, rl, kWarp, kGuard);
  Func lanes = s.update().rfactor(rl, lane);
  lanes.compute_at(at).store_in(Halide::MemoryType::Register);
  // The lane partials' `partial` (which reduces over rv, then its other
  // RVars) as vectors: vec(..., vv) holds each lane's `vector` partials,
  // its pure loops ordered as `loops` (vv innermost), its reduction loops
  // between vv and them; `threads` maps the loops to the GPU.
  auto lane_vectors = [&](Func partial, const std::vector<VarOrRVar>& loops,
                          const std::function<void(Stage)>& threads) {
    Var vv("vv");
    Func vec = partial.update().rfactor(rv, vv);
    vec.compute_at(at).store_in(Halide::MemoryType::Register);
    std::vector<VarOrRVar> pure{vv}, update{vv};
    pure.insert(pure.end(), loops.begin(), loops.end());
    for (RVar v : rvars_of(vec.update())) update.emplace_back(v);
    update.insert(update.end(), loops.begin(), loops.end());
    vec.reorder(pure).vectorize(vv);
    vec.update().reorder(update).vectorize(vv);
    threads(vec);
    threads(vec.update());
  };
  if (row_dim >= 0) {
    // The stage's own loops: the row as y threads over an x loop of extent 1
    // (the lanes own x), so each warp finishes its row.
    Var row = sargs[row_dim], rw("srw"), rx("srx");
    auto by_row = [&](Stage st, bool reduction) {
      std::vector<VarOrRVar> order;
      if (reduction)
        for (RVar v : rvars_of(st)) order.emplace_back(v);
      for (size_t i = 0; i < sargs.size(); ++i)
        if (static_cast<int>(i) != row_dim) order.emplace_back(sargs[i]);
      order.emplace_back(rx);
      order.emplace_back(rw);
      st.split(row, rw, rx, 1).reorder(order).gpu_threads(rx, rw);
    };
    by_row(s, false);
    by_row(s.update(), true);
    auto lanes_by_row = [&](Stage st, bool reduction) {
      std::vector<VarOrRVar> order;
      if (reduction)
        for (RVar v : rvars_of(st)) order.emplace_back(v);
      for (size_t i = 0; i < sargs.size(); ++i)
        if (static_cast<int>(i) != row_dim) order.emplace_back(sargs[i]);
      order.emplace_back(lane);
      order.emplace_back(row);
      st.reorder(order).gpu_lanes(lane).gpu_threads(row);
    };
    // Lane-major storage, so that each warp's partials are its lanes' registers.
    std::vector<Var> storage{lane};
    for (const Var& v : sargs) storage.push_back(v);
    lanes.reorder_storage(storage);
    if (vector > 1) {
      std::vector<VarOrRVar> loops;
      for (size_t i = 0; i < sargs.size(); ++i)
        if (static_cast<int>(i) != row_dim) loops.emplace_back(sargs[i]);
      loops.emplace_back(lane);
      loops.emplace_back(row);
      lane_vectors(lanes, loops, [&](Stage st) { st.gpu_lanes(lane).gpu_threads(row); });
    }
    lanes_by_row(lanes, false);
    lanes_by_row(lanes.update(), true);
    return short_name(s) + " across lanes";
  }
  // The reduction loops innermost (rfactor leaves them outside the new pure dims).
  auto reduction_inside = [](Stage st, std::initializer_list<VarOrRVar> loops) {
    std::vector<VarOrRVar> order;
    for (RVar v : rvars_of(st)) order.emplace_back(v);
    order.insert(order.end(), loops.begin(), loops.end());
    st.reorder(order);
  };
  lanes.gpu_lanes(lane);
  if (warps > 1) {
    RVar roo("roo"), rw("rw");
    Var warp("warp");
    Func across = lanes.update().split(ro, roo, rw, warps, kGuard).rfactor(rw, warp);
    across.compute_at(at).reorder(lane, warp).gpu_lanes(lane).gpu_threads(warp);
    if (vector > 1) lane_vectors(across, {lane, warp}, [&](Stage st) { st.gpu_lanes(lane).gpu_threads(warp); });
    reduction_inside(across.update(), {lane, warp});
    across.update().gpu_lanes(lane).gpu_threads(warp);
  } else if (vector > 1) {
    lane_vectors(lanes, {lane}, [&](Stage st) { st.gpu_lanes(lane); });
  }
  reduction_inside(lanes.update(), {lane});
  lanes.update().gpu_lanes(lane);
  return short_name(s) + (warps > 1 ? " across lanes and warps" : " across lanes");
}

// The index of the first extent above 1, or -1.
int first_long_dim(const std::vector<int64_t>& ext) {
  for (size_t i = 0; i < ext.size(); ++i)
    if (ext[i] > 1) return static_cast<int>(i);
  return -1;
}

// Rows owned by blocks: `owner` (computed at root) has the row dims (all its
// dims, or all but the innermost `x` when has_x, which then spreads over the
// lanes; `row_ext` their extents, Halide order) and each of `stages` (whose
// dims have extents `stage_ext`: the row dims, possibly without the size-1
// ones) reduces one row of `row_len` contiguous elements. Short rows get one
// warp each, `rows_per_block` to a block; long rows, or too few rows to fill
// the GPU that way, a block each with up to `row_warps` warps. The stages
// are computed per block, before the owner's threads read them.
//
// `with`: more outputs of the owner's dims (has_x), in kernel order, each
// tiled as the owner is and computed in its loop nest, element by element
// (a row epilogue of several outputs; they read the stages too).
std::string schedule_rows(Func owner, bool has_x, int64_t row_len, const std::vector<int64_t>& row_ext,
                          const std::vector<int64_t>& stage_ext, const std::vector<Func>& stages, const CudaArch& a,
                          const std::vector<Func>& with = {}) {
  std::vector<Func> all = with;
  all.push_back(owner);
  auto each = [&](const std::function<void(Func&)>& apply) {
    for (Func& f : all) apply(f);
  };
  each([](Func& f) { f.compute_root(); });
  std::vector<Var> args = owner.args();
  Var x;
  std::vector<Var> row_dims(args.begin() + (has_x ? 1 : 0), args.end());
  if (has_x) x = args[0];
  const int64_t rows = product(row_ext);
  const int owner_row = first_long_dim(row_ext), stage_row = first_long_dim(stage_ext);
  const bool block_per_row = owner_row < 0 || stage_row < 0 || row_len >= a.block_row_min ||
                             rows < static_cast<int64_t>(a.sm_count) * a.rows_per_block;
  // The block loop: all row dims fused (one row per block), or the first
  // long one split into groups of rows_per_block and the rest fused onto it.
  // With `with`, the other row dims are further grid dims instead: fused
  // onto the block loop, they lose Halide 14's bounds of the stages in a
  // compute_with group (each block would reduce every row of that dim).
  Var block, rw("rw");
  std::vector<Var> grid;  // further block dims, innermost first
  auto onto_block = [&](const Var& d, const std::string& name) {
    if (with.empty() || grid.size() == 2) {
      Var fused(name);
      Var& onto = grid.empty() ? block : grid.back();
      each([&](Func& f) { f.fuse(onto, d, fused); });
      onto = fused;
    } else {
      grid.push_back(d);
    }
  };
  if (row_dims.empty()) {
    // One row (a rank-1 owner): a block loop of extent 1 to compute the stages in.
    Var xr("xr");
    block = Var("xb");
    each([&](Func& f) { f.split(x, block, xr, static_cast<int>(row_len), kGuard); });
    x = xr;
  } else if (block_per_row) {
    block = row_dims[0];
    for (size_t d = 1; d < row_dims.size(); ++d) onto_block(row_dims[d], "frow" + std::to_string(d));
  } else {
    block = Var("rb");
    each([&](Func& f) { f.split(row_dims[owner_row], block, rw, a.rows_per_block, kGuard); });
    for (size_t d = 0; d < row_dims.size(); ++d)
      if (static_cast<int>(d) != owner_row) onto_block(row_dims[d], "frow" + std::to_string(d));
  }
  auto gpu_blocks = [&](Func& f) {
    if (grid.empty()) f.gpu_blocks(block);
    else if (grid.size() == 1) f.gpu_blocks(block, grid[0]);
    else f.gpu_blocks(block, grid[0], grid[1]);
  };
  std::ostringstream how;
  std::vector<std::string> parts;
  // Vectors along the rows: each lane reads `vector` neighbouring elements.
  // Not where every output is f32: Halide 14 stores those vectors as two
  // 64-bit halves, and on an H200 the f32 layer norms (forward and
  // gradient) ran 5-8% slower that way, while bf16 rows (layer norms with a
  // bf16 output) and one value per row (logsumexp) ran 10-17% faster, and
  // so did row epilogues writing both (GPT-2's residual sum in f32 and its
  // bf16 cast: 36 -> 30 us forward, 58 -> 45 us with the norm's gradient).
  bool wide_rows = has_x;
  for (Func& f : all) wide_rows = wide_rows && f.output_types()[0].bytes() > 2;
  const int vector = row_len % a.vector == 0 && row_len >= kWarp * a.vector && !wide_rows ? a.vector : 1;
  Var xv("xv");
  if (has_x && vector > 1) {
    Var xs("xs");
    each([&](Func& f) { f.split(x, xs, xv, vector, TailStrategy::RoundUp).vectorize(xv); });
    x = xs;
  }
  auto vector_inside = [&](std::initializer_list<VarOrRVar> loops) {
    std::vector<VarOrRVar> order;
    if (has_x && vector > 1) order.emplace_back(xv);
    order.insert(order.end(), loops.begin(), loops.end());
    each([&](Func& f) { f.reorder(order); });
  };
  // The lanes' serial loop over a row's elements, where `with` joins the owner.
  Var xo("xo");
  if (block_per_row) {
    const int warps = static_cast<int>(std::clamp<int64_t>(ceil_div(row_len, kWarp * a.min_per_lane), 1, a.row_warps));
    if (has_x) {
      Var xt("xt"), xw("xw"), xl("xl");
      if (warps > 1) {
        each([&](Func& f) { f.split(x, xo, xt, kWarp * warps, kGuard).split(xt, xw, xl, kWarp); });
        vector_inside({xo, xl, xw, block});
        each([&](Func& f) { gpu_blocks(f.gpu_lanes(xl).gpu_threads(xw)); });
      } else {
        each([&](Func& f) { f.split(x, xo, xl, kWarp, kGuard); });
        vector_inside({xo, xl, block});
        each([&](Func& f) { gpu_blocks(f.gpu_lanes(xl)); });
      }
    } else {
      owner.gpu_blocks(block);
    }
    for (Func s : stages) parts.push_back(reduce_at(s, LoopLevel(owner, block), warps, -1, vector));
    how << "one block per row (" << warps << (warps > 1 ? " warps" : " warp") << ")";
  } else {
    if (has_x) {
      Var xl("xl");
      each([&](Func& f) { f.split(x, xo, xl, kWarp, kGuard); });
      vector_inside({xo, xl, rw, block});
      each([&](Func& f) { gpu_blocks(f.gpu_lanes(xl).gpu_threads(rw)); });
    } else {
      // The lanes are the x threads: the owner's own x loop has extent 1.
      Var rx("rx");
      owner.split(rw, rw, rx, 1).reorder(rx, rw, block).gpu_blocks(block).gpu_threads(rx, rw);
    }
    for (Func s : stages) parts.push_back(reduce_at(s, LoopLevel(owner, block), 1, stage_row, vector));
    how << "one warp per row, " << a.rows_per_block << " rows per block";
  }
  // Each output after the one that follows it, as schedule_fused_outputs does.
  if (has_x)
    for (size_t i = all.size() - 1; i-- > 0;) all[i].compute_with(all[i + 1], xo);
  if (vector > 1) how << ", " << vector << "-wide vectors";
  if (!parts.empty()) {
    how << "; reductions ";
    for (size_t i = 0; i < parts.size(); ++i) how << (i ? ", " : "") << parts[i];
  }
  return how.str();
}

// A reduction of `total` elements to one value (s has no pure dims), read by
// a consumer that runs on one GPU thread. A grid of blocks reduces strided
// chunks into one partial per thread, one block reduces those per block, and
// the consumer's thread adds the last `grid_threads` partials.
std::string reduce_grid(Func s, int64_t total, const CudaArch& a) {
  if (!splittable(s)) {
    s.compute_root().gpu_single_thread();
    for (int u = 0; u < s.num_update_definitions(); ++u) s.update(u).gpu_single_thread();
    return short_name(s) + " serial on one GPU thread";
  }
  const RVar r = fuse_rvars(s.update());
  const int t = static_cast<int>(std::min<int64_t>(a.grid_threads, round_up(total, kWarp)));
  const int64_t blocks = std::clamp<int64_t>(ceil_div(total, static_cast<int64_t>(t) * a.min_per_thread), 1,
                                             static_cast<int64_t>(a.sm_count) * a.grid_blocks_per_sm);
  Var tv("t"), bv("b"), tb("tb"), tt("tt");
  RVar rr("rr"), rbt("rbt"), rb("rb"), rt("rt");
  // Each level's partials are reduced by their own threads in registers
  // (computed inside a wrapper that holds them), one GPU kernel per level.
  auto one_block = [&](Func partials, Var v) {
    Func held = partials.in();
    held.compute_root().split(v, tb, tt, t).gpu_blocks(tb).gpu_threads(tt);
    partials.compute_at(held, tt);
  };
  if (blocks == 1) {
    Func part = s.update().split(r, rr, rt, t, kGuard).rfactor(rt, tv);
    one_block(part, tv);
    return short_name(s) + " by one block of " + std::to_string(t) + " threads, then one thread";
  }
  s.update().split(r, rr, rbt, static_cast<int>(blocks * t), kGuard).split(rbt, rb, rt, t);
  Func part = s.update().rfactor({{rb, bv}, {rt, tv}});
  Func held = part.in();
  held.compute_root().reorder(tv, bv).gpu_blocks(bv).gpu_threads(tv);
  part.compute_at(held, tv);
  Var t2("t2");
  Func per_thread = s.update().rfactor(rt, t2);
  one_block(per_thread, t2);
  return short_name(s) + " by a grid of " + std::to_string(blocks) + "x" + std::to_string(t) + " threads, then one block" +
         ", then one thread";
}

// A reduction across rows (the contiguous dim is kept): out(kept) reads
// acc(kept), which sums `total` elements down each column. The reduced
// dims, fused into one loop, are split into segments: part(kept, chunk) has
// one thread per element, about as many as the GPU holds at once, each
// summing its segment with a.column_unroll loads in flight (HBM needs tens
// of KB in flight per SM; one 2-byte load per thread leaves it mostly idle).
// out then reduces each column's segment partials as a row (schedule_rows:
// a warp's lanes, warp shuffles). Returns "" when there are too many outputs
// to need this, too few elements, or a reduction that cannot be split; the
// caller then reduces each column serially.
std::string schedule_columns(Func out, Func acc, const Shape& out_shape, const Shape& kept, int64_t total,
                             const CudaArch& a) {
  const int64_t outputs = numel(out_shape);
  const int64_t resident = static_cast<int64_t>(a.sm_count) * a.max_threads_per_sm;
  const int unroll = a.column_unroll;
  if (2 * outputs >= resident || total < 2 * a.min_per_thread || !splittable(acc)) return "";
  // Segments of whole unrolled steps; of those within a factor of two of
  // the first choice, the closest that divides the column (no guard).
  const int64_t first = round_up(std::max<int64_t>(ceil_div(total, ceil_div(resident, outputs)), a.min_per_thread), unroll);
  int64_t seg = first;
  double best = 2;
  for (int64_t s = round_up(first / 2, unroll); s <= 2 * first; s += unroll) {
    const double off = s > first ? static_cast<double>(s) / first : static_cast<double>(first) / s;
    if (total % s == 0 && off < best) {
      seg = s;
      best = off;
    }
  }
  const int64_t chunks = ceil_div(total, seg);
  const RVar r = fuse_rvars(acc.update());
  RVar rc("rc"), rs("rs"), rso("rso"), rsi("rsi");
  Var chunk("chunk");
  Func part = acc.update().split(r, rc, rs, static_cast<int>(seg), kGuard).rfactor(rc, chunk);
  part.update().split(rs, rso, rsi, unroll).unroll(rsi);
  std::vector<int64_t> part_ext = halide_extents(kept);
  part_ext.push_back(chunks);
  Func held = part.in();
  held.compute_root();
  // Segments as if one column per thread: on an H200, 4x the segments for
  // 4 columns per thread made the column sums 6% slower (their second
  // kernel, over the segments' partials, grew more than the first gained).
  const int vector = kept.back() % a.vector == 0 ? a.vector : 1;
  Tiled t = tile_stage(held, held.args(), part_ext, 1, a, vector);
  part.compute_at(held, t.inner);
  if (vector > 1) {
    // Each thread sums `vector` neighbouring columns, one vector load a row.
    const Var px = part.args()[0];
    part.vectorize(px);
    part.update().reorder(px, rsi, rso).vectorize(px);
  }
  std::ostringstream how;
  how << short_name(acc) << " down columns: " << chunks << " segments of " << seg << " per column"
      << (vector > 1 ? ", " + std::to_string(vector) + " columns" : ", one") << " per thread (" << t.how << ", "
      << unroll << " loads in flight each); then "
      << schedule_rows(out, false, chunks, halide_extents(out_shape), halide_extents(kept), {acc}, a)
      << " over each column's segments";
  return how.str();
}

// sum/mean/max: out(kept) reads acc(kept), which reduces the input's
// `axes`. Along the contiguous dim: rows (schedule_rows). To one value: a
// grid reduction. Across rows: schedule_columns, or, for reductions too
// small to split, one thread per output element, serial over the reduced
// elements.
std::string schedule_reduction(Func out, Func acc, const Node& node, const Shape& in_shape, const CudaArch& a) {
  std::vector<int64_t> axes = attr_ints(node.attrs, "axes", node.op);
  const int rank = static_cast<int>(in_shape.size());
  for (int64_t& ax : axes)
    if (ax < 0) ax += rank;
  if (axes.empty())
    for (int d = 0; d < rank; ++d) axes.push_back(d);
  auto reduced = [&](int d) { return std::find(axes.begin(), axes.end(), d) != axes.end(); };
  int64_t total = 1;  // reduced elements per output
  Shape kept;         // the input dims that remain (row-major)
  for (int d = 0; d < rank; ++d) {
    if (reduced(d)) total *= in_shape[d];
    else kept.push_back(in_shape[d]);
  }
  if (acc.num_update_definitions() == 0) return root_on_gpu(out, halide_extents(node.type.shape), a).how;
  if (kept.empty()) {
    out.compute_root().gpu_single_thread();
    return "one GPU thread; " + reduce_grid(acc, total, a);
  }
  const int64_t row_len = rank > 0 && reduced(rank - 1) ? in_shape.back() : 0;
  if (row_len >= 8)
    return schedule_rows(out, false, row_len, halide_extents(node.type.shape), halide_extents(kept), {acc}, a);
  if (std::string how = schedule_columns(out, acc, node.type.shape, kept, total, a); !how.empty()) return how;
  Tiled t = root_on_gpu(out, halide_extents(node.type.shape), a);
  acc.compute_at(out, t.inner);
  return t.how + "; " + short_name(acc) + " per output element, serial";
}

// ---- matrix products -----------------------------------------------------------------

// One dim of a product's block tile: `threads` threads x `regs` registers.
struct TileDim {
  int64_t tile, threads, regs;
};

// The tile along a dim of `extent`: full size when the dim is that long
// (the last tile then shifts inwards), else as many whole register groups
// as fit, else one thread per element.
TileDim tile_dim(int64_t extent, int threads, int regs) {
  if (extent >= static_cast<int64_t>(threads) * regs) return {static_cast<int64_t>(threads) * regs, threads, regs};
  if (extent >= 2 * regs) return {extent / regs * regs, extent / regs, regs};
  return {extent, extent, 1};
}

// out(n, m, batch...) reads acc, which has one update acc += a(k, m) * b(k, n)
// over the RDom k (ops_linalg.cpp); `operands` are the Funcs acc reads.
// Each block computes an n x m tile of out: acc for the tile lives in shared
// memory; for each k-tile the operands' tiles are staged in shared memory by
// all the block's threads, then each thread accumulates its register
// micro-tile over the k-tile (an rfactor of acc's update over the k-tiles)
// and adds it into acc. `elem_bytes`: the accumulator's element size, which
// bounds the tile by the shared memory a block may use. Returns the
// description.
std::string schedule_gemm(Func out, Func acc, const std::vector<Func>& operands, const Shape& shape, int64_t K,
                          int elem_bytes, const CudaArch& a) {
  const int64_t N = shape[shape.size() - 1], M = shape[shape.size() - 2];
  int threads_m = a.gemm_threads_m;
  TileDim tn{}, tm{};
  int64_t kt = std::min<int64_t>(a.gemm_tile_k, K);
  for (;;) {
    tn = tile_dim(N, a.gemm_threads_n, a.gemm_regs_n);
    tm = tile_dim(M, threads_m, a.gemm_regs_m);
    const int64_t smem = (tn.tile * tm.tile + kt * (tn.tile + tm.tile)) * elem_bytes;
    if (smem <= static_cast<int64_t>(a.smem_per_block_kb) * 1024 || threads_m == 1) break;
    threads_m /= 2;
  }
  std::vector<Var> args = out.args();
  Var n = args[0], m = args[1];
  Var nb("nb"), mb("mb"), ni("ni"), mi("mi"), nt("nt"), nr("nr"), mt("mt"), mr("mr");
  out.compute_root()
      .split(n, nb, ni, static_cast<int>(tn.tile), TailStrategy::ShiftInwards)
      .split(m, mb, mi, static_cast<int>(tm.tile), TailStrategy::ShiftInwards)
      .split(ni, nr, nt, static_cast<int>(tn.threads))
      .split(mi, mr, mt, static_cast<int>(tm.threads));
  std::vector<VarOrRVar> order{nr, mr, nt, mt, nb, mb};
  Var batch;
  if (args.size() > 2) {
    batch = args[2];
    for (size_t d = 3; d < args.size(); ++d) {
      Var fused("fb" + std::to_string(d));
      out.fuse(batch, args[d], fused);
      batch = fused;
    }
    order.emplace_back(batch);
  }
  out.reorder(order).unroll(nr).unroll(mr).gpu_threads(nt, mt);
  if (args.size() > 2) out.gpu_blocks(nb, mb, batch);
  else out.gpu_blocks(nb, mb);

  // acc: the block's tile, in shared memory; each thread owns a contiguous micro-tile.
  acc.compute_at(out, nb);
  std::vector<Var> acc_args = acc.args();
  Var an = acc_args[0], am = acc_args[1], ant("ant"), anr("anr"), amt("amt"), amr("amr");
  const int rn = static_cast<int>(tn.regs), rm = static_cast<int>(tm.regs);
  acc.split(an, ant, anr, rn).split(am, amt, amr, rm).reorder(anr, amr, ant, amt).gpu_threads(ant, amt);
  RVar k = rvars_of(acc.update())[0], ko("ko"), ki("ki");
  Var u("ktile");
  acc.update().split(k, ko, ki, static_cast<int>(kt), kGuard);
  Func part = acc.update().rfactor(ko, u);
  acc.update().split(an, ant, anr, rn).split(am, amt, amr, rm).reorder(anr, amr, ant, amt, ko).gpu_threads(ant, amt);
  // The micro-tile of one k-tile, in registers: k outermost, the tile unrolled inside.
  std::vector<Var> part_args = part.args();
  part.compute_at(acc, ant).store_in(Halide::MemoryType::Register).unroll(part_args[0]).unroll(part_args[1]);
  part.update().reorder(part_args[0], part_args[1], ki).unroll(part_args[0]).unroll(part_args[1]);
  // The operands' k-tiles in shared memory, loaded by all threads.
  std::vector<Halide::Internal::Function> staged;
  for (Func operand : operands) {
    bool seen = false;  // matmul(x, x) reads one Func twice: stage it once
    for (const auto& f : staged) seen = seen || f.same_as(operand.function());
    if (seen) continue;
    staged.push_back(operand.function());
    Func tile = operand.in(part);
    std::vector<Var> ta = tile.args();
    Var o0("o0"), t0("t0"), o1("o1"), t1("t1");
    tile.compute_at(acc, ko)
        .split(ta[0], o0, t0, static_cast<int>(tn.threads), kGuard)
        .split(ta[1], o1, t1, static_cast<int>(tm.threads), kGuard)
        .reorder(o0, o1, t0, t1)
        .gpu_threads(t0, t1);
  }
  std::ostringstream how;
  how << "root, GPU tiled matmul: block tiles " << tn.tile << "x" << tm.tile << " (n x m, " << tn.threads * tm.threads
      << " threads, " << rn << "x" << rm << " registers each), k-tiles of " << kt
      << " staged in shared memory, edges shifted inwards";
  return how.str();
}

// ---- cross_entropy -------------------------------------------------------------------

// The row max and row sum (stages 0, 1; absent when the op reads its row
// log-sum-exp as an input) are each computed row-wise into a buffer of their
// own (their wrappers own the rows); the loss total and the count (the last
// two stages) are grid reductions over the rows; the result is one GPU thread.
std::string schedule_cross_entropy(Func out, const std::vector<Func>& stages, const Shape& logits, const CudaArch& a) {
  const int64_t rows = logits[0], classes = logits[1];
  const size_t row_stages = stages.size() - 2;
  std::string how;
  for (size_t i = 0; i < row_stages; ++i) {
    Func stage = stages[i];
    Func rowwise = stage.in();
    how += (i ? "; " : "") + short_name(stage) + " at root: " +
           schedule_rows(rowwise, false, classes, {rows}, {rows}, {stage}, a);
  }
  out.compute_root().gpu_single_thread();
  for (size_t i = row_stages; i < stages.size(); ++i) how += (i ? "; " : "") + reduce_grid(stages[i], rows, a);
  return "one GPU thread; " + how;
}

// ---- fused outputs -----------------------------------------------------------------------

// Whether `norm` (layer_norm or rms_norm, without weight: the norm a
// backward recomputes) computes the same row statistics, as the same
// stages in the same order (norm_rows in ops_nn.cpp), as `grad`, that
// norm's gradient of the same input and eps.
bool reuses_norm_statistics(const Node& norm, const Node& grad) {
  const bool pair = (norm.op == "layer_norm" && grad.op == "layer_norm_grad") ||
                    (norm.op == "rms_norm" && grad.op == "rms_norm_grad");
  return pair && norm.inputs.size() == 1 && norm.inputs[0] == grad.inputs[0] &&
         attr_float(norm.attrs, "eps", norm.op) == attr_float(grad.attrs, "eps", grad.op);
}

// A kernel with several pointwise outputs of one shape (partition.h): each
// becomes a copy of its node's Func, tiled alike, and all are computed in
// the last one's loop nest (one GPU kernel reading their common inputs once).
// With a row epilogue (`row_op` >= 0, the row-wise node the outputs read)
// the tiles are the rows of row_op, and each block first computes
// `row_stages` (row_op's, and those of any row-wise output).
std::string schedule_fused_outputs(LoweredGraph& L, const Graph& g, int row_op, const std::vector<Func>& row_stages,
                                   const CudaArch& a) {
  const std::vector<int64_t> ext = halide_extents(g.node(L.output_nodes.back()).type.shape);
  copy_outputs(L);
  if (row_op >= 0) {
    const std::vector<int64_t> rows(ext.begin() + 1, ext.end());
    const std::vector<Func> with(L.outputs.begin(), L.outputs.end() - 1);
    return "  outputs: " + schedule_rows(L.outputs.back(), true, ext[0], rows, rows, row_stages, a, with) +
           ", all in one GPU kernel\n";
  }
  Tiled last;
  for (Func out : L.outputs) last = root_on_gpu(out, ext, a, true);
  // Each output after the one that follows it: the last first, then back to
  // the first (memory_plan.h's in-place updates rely on this order).
  for (size_t i = L.outputs.size() - 1; i-- > 0;) L.outputs[i].compute_with(L.outputs[i + 1], last.inner);
  return "  outputs: " + last.how + ", all in one GPU kernel\n";
}

}  // namespace

std::string schedule_cuda(LoweredGraph& L, const Graph& g, const Halide::Target& target, const CudaArch& a) {
  if (!target.has_feature(Halide::Target::CUDA))
    fail("schedule ", a.name, ": target ", target.to_string(), " has no CUDA feature");
  const bool fused = L.outputs.size() > 1;
  std::vector<bool> is_output(g.nodes.size(), false);
  if (!fused)
    for (int o : L.output_nodes) is_output[o] = true;
  // A row epilogue (partition.h): the outputs own the rows of the row-wise
  // op they read, which is inlined into them.
  const int row_op = row_epilogue_input(g, L.output_nodes);
  std::ostringstream log;
  // The stages each block of a row epilogue computes first: the row op's,
  // and in a kernel of several outputs those of the row-wise outputs (a
  // layer norm recomputed beside its gradient), computed in the same rows.
  std::vector<Func> row_stages;
  if (row_op >= 0) row_stages = L.stages[row_op];
  for (const Node& node : g.nodes) {
    if (node.is_leaf() && node.op != "constant") continue;
    if (node.id == row_op) {
      log << "  " << node.name << " (" << node.op << "): inline, its rows computed with the output's\n";
      continue;
    }
    if (fused && row_op >= 0 && row_wise(node) &&
        std::find(L.output_nodes.begin(), L.output_nodes.end(), node.id) != L.output_nodes.end()) {
      log << "  " << node.name << " (" << node.op << "): an output, its rows computed with the others'";
      if (reuses_norm_statistics(node, g.node(row_op))) {
        // A norm beside its own gradient reads the gradient's row
        // statistics (the same reductions of the same rows) instead.
        for (size_t i = 0; i < L.stages[node.id].size(); ++i)
          L.funcs[node.id].function().substitute_calls(L.stages[node.id][i].function(),
                                                        L.stages[row_op][i].function());
        log << ", reading " << g.node(row_op).name << "'s row statistics";
      } else {
        row_stages.insert(row_stages.end(), L.stages[node.id].begin(), L.stages[node.id].end());
      }
      log << "\n";
      continue;
    }
    Func f = L.funcs[node.id];
    const std::vector<Func>& stages = L.stages[node.id];
    const bool root = is_materialized(node) || is_output[node.id];
    const Shape& shape = node.type.shape;
    const std::vector<int64_t> ext = halide_extents(shape);
    std::string what;
    if (!root) {
      // Inlined; a gather op's scatter table (embedding_grad) is still computed at root.
      what = "inline";
      for (Func s : stages) what += "; " + short_name(s) + ": " + stage_on_gpu(s, ext, a).how;
    } else if ((node.op == "matmul" || node.op == "linear") && stages.size() == 1 && node.type.rank() >= 2) {
      const int64_t K = g.node(node.inputs[0]).type.shape.back();
      const int bytes = std::max<int>(4, static_cast<int>(dtype_size(node.type.dtype)));  // f16 accumulates in f32
      what = schedule_gemm(f, stages[0], {L.funcs[node.inputs[0]], L.funcs[node.inputs[1]]}, shape, K, bytes, a);
    } else if ((node.op == "linear_int8" || node.op == "linear_nf4" || node.op == "linear_int8_grad_input" ||
                node.op == "linear_nf4_grad_input") && stages.size() >= 2) {
      // Weight-only quantized products: one thread per output element, its
      // reduction serial in registers, the packed weight dequantized inline
      // (never materialized); a double-quantized absmax (and its codes) first, at root.
      std::string pre;
      for (Func s : stages)
        if (short_name(s) == "codes" || short_name(s) == "absmax")
          pre += "; " + short_name(s) + ": " + stage_on_gpu(s, {}, a).how;
      Tiled t = root_on_gpu(f, ext, a);
      Func acc = stages[0];
      acc.compute_at(f, t.inner);
      what = t.how + "; " + short_name(stages[0]) + " per output element, serial, weight dequantized inline" + pre;
    } else if (node.op == "sum" || node.op == "mean" || node.op == "max") {
      what = schedule_reduction(f, stages[0], node, g.node(node.inputs[0]).type.shape, a);
    } else if (row_wise(node) || (row_op >= 0 && is_output[node.id])) {
      // Rows along the last dim; the stages (row max and sum, mean and
      // variance) have the row dims.
      const std::vector<int64_t> rows(ext.begin() + 1, ext.end());
      what = schedule_rows(f, true, shape.back(), rows, rows, row_op >= 0 ? L.stages[row_op] : stages, a);
    } else if (node.op == "logsumexp" && stages.size() == 2) {
      const int64_t len = g.node(node.inputs[0]).type.shape.back();
      if (node.type.rank() >= 1) {
        // One row per output element: the row max and sum stages at its rows.
        what = schedule_rows(f, false, len, ext, ext, stages, a);
      } else {
        // One row: the max and the sum each reduced by a grid, the max
        // first into a buffer of its own that the sum's grid reads.
        f.compute_root().gpu_single_thread();
        what = "one GPU thread; " + reduce_grid(stages[0], len, a) + "; " + reduce_grid(stages[1], len, a);
        Func mx = stages[0];
        mx.compute_root().gpu_single_thread();
        mx.update().gpu_single_thread();
      }
    } else if (node.op == "cross_entropy" && (stages.size() == 4 || stages.size() == 2)) {
      what = schedule_cross_entropy(f, stages, g.node(node.inputs[0]).type.shape, a);
    } else {
      // Everything else: internal stages at root, tiled over their own dims
      // (reductions serial per element, scatters as scatter_update says),
      // then the node itself.
      std::vector<std::string> parts;
      for (Func s : stages) parts.push_back(short_name(s) + ": " + stage_on_gpu(s, {}, a).how);
      what = root_on_gpu(f, ext, a, true).how;
      for (const std::string& p : parts) what += "; " + p;
    }
    log << "  " << node.name << " (" << node.op << "): " << what << "\n";
  }
  // Outputs that are copies of leaves or of another output.
  for (size_t i = 0; i < L.outputs.size(); ++i)
    if (!fused && !L.outputs[i].function().same_as(L.funcs[L.output_nodes[i]].function()))
      root_on_gpu(L.outputs[i], halide_extents(g.node(L.output_nodes[i]).type.shape), a, true);
  if (fused) log << schedule_fused_outputs(L, g, row_op, row_stages, a);
  // Static shapes: every output's bounds are constants.
  for (size_t i = 0; i < L.outputs.size(); ++i) {
    const std::vector<int64_t> ext = halide_extents(g.node(L.output_nodes[i]).type.shape);
    std::vector<Var> args = L.outputs[i].args();
    for (size_t d = 0; d < args.size() && d < ext.size(); ++d)
      L.outputs[i].bound(args[d], 0, static_cast<int>(ext[d]));
    for (Halide::OutputImageParam b : L.outputs[i].output_buffers()) pin_dense(b, ext);
  }
  for (size_t i = 0; i < L.args.size(); ++i) pin_dense(L.args[i], halide_extents(g.node(L.arg_nodes[i]).type.shape));
  return log.str();
}

const CudaArch& cuda_arch(int sm) {
  if (sm == 80) return cuda_sm80_arch();
  if (sm == 90) return cuda_sm90_arch();
  fail("no CUDA schedule set for sm", sm, " (there are cuda_sm80 and cuda_sm90)");
}

}  // namespace tessera
