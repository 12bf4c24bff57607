// Reductions: sum, mean, max {axes, keepdim}. Empty axes reduce every axis;
// negative axes count from the end. Each op is an accumulator stage (a Func
// over the kept dims with one update over an RDom of the reduced dims, walked
// innermost first) and an output Func that reads it. f16 and bf16 accumulate
// in f32 and round back once.
#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;
using namespace opsutil;

enum class Reduce { sum, mean, max };

// The normalized reduced axes of `shape` (every axis when `axes` is empty).
std::vector<int64_t> reduced_axes(const Shape& shape, const Attrs& a, const std::string& op) {
  std::vector<int64_t> axes = normalize_axes(attr_ints(a, "axes", op), shape);
  if (attr_ints(a, "axes", op).empty())
    for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) axes.push_back(d);
  return axes;
}

bool is_reduced(const std::vector<int64_t>& axes, int64_t d) {
  return std::find(axes.begin(), axes.end(), d) != axes.end();
}

void register_reduction(const std::string& name, Reduce kind) {
  OpDef d;
  d.name = name;
  d.kind = OpKind::reduction;
  d.infer = [name, kind](const std::vector<TensorType>& in, const Attrs& a) {
    const TensorType& x = in[0];
    if (kind == Reduce::mean) need_float(x);
    else if (x.dtype == DType::boolean) fail("needs a numeric input, got ", to_string(x));
    std::vector<int64_t> axes = reduced_axes(x.shape, a, name);
    bool keepdim = attr_bool(a, "keepdim", name);
    Shape out;
    for (int64_t i = 0; i < x.rank(); ++i) {
      if (!is_reduced(axes, i)) out.push_back(x.shape[i]);
      else if (keepdim) out.push_back(1);
    }
    return TensorType{x.dtype, out};
  };
  d.define = [name, kind](const DefineContext& c) {
    const Shape& in_shape = c.input_types[0].shape;
    const int rank = static_cast<int>(in_shape.size());
    DType t = c.node.type.dtype;
    Halide::Type ct = compute_type(t);
    std::vector<int64_t> axes = reduced_axes(in_shape, c.node.attrs, name);
    bool keepdim = attr_bool(c.node.attrs, "keepdim", name);

    auto out_vars = make_vars(c.node.type.rank());
    std::vector<Expr> out_idx = as_exprs(out_vars);
    std::vector<int64_t> red_extents;
    for (int64_t a : axes) red_extents.push_back(in_shape[a]);
    RowMajorRDom r;
    if (!red_extents.empty()) r = row_major_rdom(red_extents, c.node.name + "_r");

    // Accumulator vars: one per kept axis. Input index: kept vars and RVars.
    std::vector<Halide::Var> acc_vars;
    std::vector<Expr> acc_from_out;  // the accumulator index the output reads
    std::vector<Expr> in_idx;
    int next_red = 0;
    for (int i = 0; i < rank; ++i) {
      if (is_reduced(axes, i)) {
        in_idx.push_back(r.vars[next_red++]);
      } else {
        Halide::Var v("d" + std::to_string(acc_vars.size()));
        acc_vars.push_back(v);
        in_idx.push_back(v);
        int out_pos = keepdim ? i : static_cast<int>(acc_from_out.size());
        acc_from_out.push_back(out_idx[out_pos]);
      }
    }

    Func acc(c.node.name + "_acc");
    Expr init = kind == Reduce::max ? ct.min() : konst(ct, 0.0);
    Expr x = Halide::cast(ct, at(c.inputs[0], in_idx));
    if (axes.empty()) {
      define_pure(acc, acc_vars, x);  // reducing nothing (a scalar input)
    } else {
      define_pure(acc, acc_vars, init);
      std::vector<Expr> acc_idx = as_exprs(acc_vars);
      if (kind == Reduce::max) ref(acc, acc_idx) = Halide::max(ref(acc, acc_idx), x);
      else ref(acc, acc_idx) += x;
    }

    Expr v = at(acc, acc_from_out);
    if (kind == Reduce::mean) {
      int64_t count = 1;
      for (int64_t e : red_extents) count *= e;
      v = v / konst(ct, static_cast<double>(count));
    }
    Func out = make_func(c.node.name, out_vars, Halide::cast(halide_type(t), v));
    return Definition{out, {acc}};
  };
  register_op(std::move(d));
}

const bool registered = [] {
  register_reduction("sum", Reduce::sum);
  register_reduction("mean", Reduce::mean);
  register_reduction("max", Reduce::max);
  return true;
}();

Tensor reduce(const char* op, Tensor x, std::vector<int64_t> axes, bool keepdim) {
  return builder_of(x, op)->add(op, {x}, {{"axes", std::move(axes)}, {"keepdim", keepdim}});
}

}  // namespace

void link_reduction_ops() { (void)registered; }

Tensor sum(Tensor x, std::vector<int64_t> axes, bool keepdim) { return reduce("sum", x, std::move(axes), keepdim); }
Tensor mean(Tensor x, std::vector<int64_t> axes, bool keepdim) {
  return reduce("mean", x, std::move(axes), keepdim);
}
Tensor max(Tensor x, std::vector<int64_t> axes, bool keepdim) { return reduce("max", x, std::move(axes), keepdim); }

}  // namespace tessera
