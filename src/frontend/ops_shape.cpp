// Shape ops: reshape, permute (and transpose, which makes a permute node),
// broadcast_to, slice, concat, squeeze, unsqueeze. Pure data movement: each
// output element reads one input element at an index computed from its own.
// Every dtype, bool included, is accepted.
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

Definition identity_def(const DefineContext& c, const std::vector<Expr>& in_idx, const std::vector<Halide::Var>& v) {
  return Definition{make_func(c.node.name, v, at(c.inputs[0], in_idx)), {}};
}

// ---- reshape -----------------------------------------------------------------

Shape resolve_reshape(const Shape& in, const Shape& want) {
  int minus = -1;
  int64_t known = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] == -1) {
      if (minus >= 0) fail("shape ", to_string(want), " has more than one -1");
      minus = static_cast<int>(i);
    } else if (want[i] < 1) {
      fail("shape ", to_string(want), " has a dimension below 1 (other than one -1)");
    } else {
      known *= want[i];
    }
  }
  Shape out = want;
  if (minus >= 0) {
    if (numel(in) % known != 0)
      fail("cannot reshape ", to_string(in), " (", numel(in), " elements) to ", to_string(want));
    out[minus] = numel(in) / known;
  }
  if (numel(out) != numel(in))
    fail("cannot reshape ", to_string(in), " (", numel(in), " elements) to ", to_string(want), " (", numel(out),
         " elements)");
  return out;
}

// The input index that row-major reshaping `in` to `out` reads at `idx`.
// Leading and trailing dims the two shapes share map straight across; only
// the middle goes through a flat index.
std::vector<Expr> reshape_index(const Shape& in, const Shape& out, const std::vector<Expr>& idx) {
  size_t p = 0;
  while (p < in.size() && p < out.size() && in[p] == out[p]) ++p;
  size_t s = 0;
  while (s < in.size() - p && s < out.size() - p && in[in.size() - 1 - s] == out[out.size() - 1 - s]) ++s;
  std::vector<Expr> r(in.size());
  for (size_t i = 0; i < p; ++i) r[i] = idx[i];
  for (size_t i = 0; i < s; ++i) r[in.size() - 1 - i] = idx[out.size() - 1 - i];
  int64_t mid = 1;
  for (size_t i = p; i < out.size() - s; ++i) mid *= out[i];
  const bool wide = mid > (int64_t{1} << 31) - 1;
  Halide::Type it = wide ? Halide::Int(64) : Halide::Int(32);
  Expr flat = Halide::Internal::make_zero(it);
  int64_t stride = 1;
  for (size_t i = out.size() - s; i-- > p;) {
    if (out[i] != 1) flat = flat + Halide::cast(it, idx[i]) * Halide::Internal::make_const(it, stride);
    stride *= out[i];
  }
  stride = 1;
  for (size_t i = in.size() - s; i-- > p;) {
    if (in[i] == 1) {
      r[i] = 0;
    } else {
      Expr q = stride == 1 ? flat : flat / Halide::Internal::make_const(it, stride);
      if (stride * in[i] != mid) q = q % Halide::Internal::make_const(it, in[i]);
      r[i] = Halide::cast(Halide::Int(32), q);
    }
    stride *= in[i];
  }
  return r;
}

// ---- permute -------------------------------------------------------------------

void check_permutation(const std::vector<int64_t>& dims, const Shape& in) {
  const int64_t rank = static_cast<int64_t>(in.size());
  if (static_cast<int64_t>(dims.size()) != rank)
    fail("dims ", to_string(dims), " are not a permutation of the ", rank, " dims of ", to_string(in));
  std::vector<bool> seen(rank, false);
  for (int64_t d : dims) {
    if (d < 0 || d >= rank || seen[d])
      fail("dims ", to_string(dims), " are not a permutation of the ", rank, " dims of ", to_string(in));
    seen[d] = true;
  }
}

// ---- slice ---------------------------------------------------------------------

const bool registered = [] {
  OpDef reshape;
  reshape.name = "reshape";
  reshape.kind = OpKind::shape;
  reshape.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    return TensorType{in[0].dtype, resolve_reshape(in[0].shape, attr_ints(a, "shape", "reshape"))};
  };
  reshape.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    return identity_def(c, reshape_index(c.input_types[0].shape, c.node.type.shape, as_exprs(v)), v);
  };
  register_op(std::move(reshape));

  OpDef permute;
  permute.name = "permute";
  permute.kind = OpKind::shape;
  permute.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const std::vector<int64_t>& dims = attr_ints(a, "dims", "permute");
    check_permutation(dims, in[0].shape);
    Shape out;
    for (int64_t d : dims) out.push_back(in[0].shape[d]);
    return TensorType{in[0].dtype, out};
  };
  permute.define = [](const DefineContext& c) {
    const std::vector<int64_t>& dims = attr_ints(c.node.attrs, "dims", "permute");
    auto v = make_vars(c.node.type.rank());
    std::vector<Expr> idx(dims.size());
    for (size_t d = 0; d < dims.size(); ++d) idx[dims[d]] = v[d];
    return identity_def(c, idx, v);
  };
  register_op(std::move(permute));

  OpDef bcast;
  bcast.name = "broadcast_to";
  bcast.kind = OpKind::shape;
  bcast.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const Shape& in_shape = in[0].shape;
    const Shape& shape = attr_ints(a, "shape", "broadcast_to");
    bool ok = shape.size() >= in_shape.size();
    for (int64_t d : shape) ok = ok && d >= 1;
    for (size_t i = 0; ok && i < in_shape.size(); ++i) {
      int64_t din = in_shape[i], dout = shape[shape.size() - in_shape.size() + i];
      ok = din == dout || din == 1;
    }
    if (!ok) fail("cannot broadcast ", to_string(in_shape), " to ", to_string(shape));
    return TensorType{in[0].dtype, shape};
  };
  bcast.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    return identity_def(c, broadcast_index(c.input_types[0].shape, c.node.type.shape, as_exprs(v)), v);
  };
  register_op(std::move(bcast));

  OpDef slice;
  slice.name = "slice";
  slice.kind = OpKind::shape;
  slice.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    SliceSpec s = resolve_slice(in[0].shape, a);
    Shape out = in[0].shape;
    out[s.axis] = s.length;
    return TensorType{in[0].dtype, out};
  };
  slice.define = [](const DefineContext& c) {
    SliceSpec s = resolve_slice(c.input_types[0].shape, c.node.attrs);
    auto v = make_vars(c.node.type.rank());
    std::vector<Expr> idx = as_exprs(v);
    idx[s.axis] = static_cast<int>(s.start) + idx[s.axis] * static_cast<int>(s.step);
    return identity_def(c, idx, v);
  };
  register_op(std::move(slice));

  OpDef concat;
  concat.name = "concat";
  concat.kind = OpKind::shape;
  concat.max_inputs = -1;
  concat.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const Shape& first = in[0].shape;
    if (first.empty()) fail("cannot concatenate scalars");
    const int64_t axis = normalize_axis_of(attr_int(a, "axis", "concat"), first);
    Shape out = first;
    out[axis] = 0;
    for (const TensorType& t : in) {
      if (t.dtype != in[0].dtype) fail("dtypes differ: ", to_string(in[0]), " and ", to_string(t));
      bool ok = t.shape.size() == first.size();
      for (size_t i = 0; ok && i < first.size(); ++i) ok = static_cast<int64_t>(i) == axis || t.shape[i] == first[i];
      if (!ok)
        fail("shapes ", to_string(first), " and ", to_string(t.shape), " differ outside the concatenation axis ",
             axis);
      out[axis] += t.shape[axis];
    }
    return TensorType{in[0].dtype, out};
  };
  concat.define = [](const DefineContext& c) {
    const int rank = c.node.type.rank();
    int64_t axis = normalize_axis(attr_int(c.node.attrs, "axis", "concat"), rank);
    auto v = make_vars(rank);
    // Piece k covers [offset_k, offset_k + size_k) of the axis; its read is
    // clamped into its own range so that bounds inference stays in bounds.
    Expr r;
    int64_t offset = c.node.type.shape[axis];
    for (size_t k = c.inputs.size(); k-- > 0;) {
      int64_t size = c.input_types[k].shape[axis];
      offset -= size;
      std::vector<Expr> idx = as_exprs(v);
      Expr local = idx[axis] - static_cast<int>(offset);
      idx[axis] = c.inputs.size() == 1 ? local : Halide::clamp(local, 0, static_cast<int>(size - 1));
      Expr val = at(c.inputs[k], idx);
      r = r.defined() ? Halide::select(v[axis] < static_cast<int>(offset + size), val, r) : val;
    }
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(concat));

  OpDef squeeze;
  squeeze.name = "squeeze";
  squeeze.kind = OpKind::shape;
  squeeze.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const Shape& s = in[0].shape;
    const std::vector<int64_t>& given = attr_ints(a, "axes", "squeeze");
    std::vector<int64_t> axes = normalize_axes(given, s);
    for (int64_t ax : axes)
      if (s[ax] != 1) fail("axis ", ax, " of shape ", to_string(s), " has size ", s[ax], ", not 1");
    Shape out;
    for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
      bool drop = given.empty() ? s[i] == 1 : std::find(axes.begin(), axes.end(), i) != axes.end();
      if (!drop) out.push_back(s[i]);
    }
    return TensorType{in[0].dtype, out};
  };
  squeeze.define = [](const DefineContext& c) {
    const Shape& s = c.input_types[0].shape;
    auto v = make_vars(c.node.type.rank());
    std::vector<Expr> idx;
    size_t next = 0;
    const std::vector<int64_t>& given = attr_ints(c.node.attrs, "axes", "squeeze");
    std::vector<int64_t> axes = normalize_axes(given, s);
    for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
      bool drop = given.empty() ? s[i] == 1 : std::find(axes.begin(), axes.end(), i) != axes.end();
      if (drop) idx.push_back(0);
      else idx.push_back(v[next++]);
    }
    return identity_def(c, idx, v);
  };
  register_op(std::move(squeeze));

  OpDef unsqueeze;
  unsqueeze.name = "unsqueeze";
  unsqueeze.kind = OpKind::shape;
  unsqueeze.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const Shape& s = in[0].shape;
    int64_t given = attr_int(a, "axis", "unsqueeze");
    int64_t axis;
    try {
      axis = normalize_axis(given, static_cast<int>(s.size()) + 1);
    } catch (const Error&) {
      fail("axis ", given, " is out of range [", -static_cast<int64_t>(s.size()) - 1, ", ", s.size(),
           "] for shape ", to_string(s));
    }
    Shape out = s;
    out.insert(out.begin() + axis, 1);
    return TensorType{in[0].dtype, out};
  };
  unsqueeze.define = [](const DefineContext& c) {
    const int rank = c.node.type.rank();
    int64_t axis = normalize_axis(attr_int(c.node.attrs, "axis", "unsqueeze"), rank);
    auto v = make_vars(rank);
    std::vector<Expr> idx;
    for (int i = 0; i < rank; ++i)
      if (i != axis) idx.push_back(v[i]);
    return identity_def(c, idx, v);
  };
  register_op(std::move(unsqueeze));
  return true;
}();

}  // namespace

namespace opsutil {

SliceSpec resolve_slice(const Shape& in, const Attrs& a) {
  if (in.empty()) fail("cannot slice a scalar");
  const int64_t axis = normalize_axis_of(attr_int(a, "axis", "slice"), in);
  int64_t size = in[axis];
  int64_t start = attr_int(a, "start", "slice"), end = attr_int(a, "end", "slice"), step = attr_int(a, "step", "slice");
  if (step < 1) fail("step ", step, " must be at least 1 (shape ", to_string(in), ")");
  auto clampi = [&](int64_t v) {
    if (v < 0) v += size;
    return std::min(std::max<int64_t>(v, 0), size);
  };
  int64_t s = clampi(start), e = clampi(end);
  int64_t length = e > s ? (e - s + step - 1) / step : 0;
  if (length == 0)
    fail("slice [", start, ":", end, ":", step, "] of axis ", axis, " of shape ", to_string(in),
         " is empty (shapes need dims >= 1)");
  return {axis, s, step, length};
}

}  // namespace opsutil

void link_shape_ops() { (void)registered; }

Tensor reshape(Tensor x, Shape shape) { return builder_of(x, "reshape")->add("reshape", {x}, {{"shape", std::move(shape)}}); }

Tensor permute(Tensor x, std::vector<int64_t> dims) {
  GraphBuilder* b = builder_of(x, "permute");
  // Negative dims count from the end; the node stores them normalized.
  for (int64_t& d : dims)
    if (d < 0 && d >= -x.rank()) d += x.rank();
  return b->add("permute", {x}, {{"dims", std::move(dims)}});
}

Tensor transpose(Tensor x, int64_t dim0, int64_t dim1) {
  builder_of(x, "transpose");
  const int rank = x.rank();
  int64_t a, b;
  try {
    a = normalize_axis(dim0, rank);
    b = normalize_axis(dim1, rank);
  } catch (const Error&) {
    fail("transpose: dims ", dim0, " and ", dim1, " are not both in range for '", x.name(), "' of type ",
         to_string(x.type()));
  }
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < rank; ++i) dims.push_back(i);
  std::swap(dims[a], dims[b]);
  return permute(x, dims);
}

Tensor broadcast_to(Tensor x, Shape shape) {
  return builder_of(x, "broadcast_to")->add("broadcast_to", {x}, {{"shape", std::move(shape)}});
}

Tensor slice(Tensor x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  return builder_of(x, "slice")->add("slice", {x}, {{"axis", axis}, {"start", start}, {"end", end}, {"step", step}});
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  if (xs.empty()) fail("concat: needs at least one input");
  return builder_of(xs[0], "concat")->add("concat", xs, {{"axis", axis}});
}

Tensor squeeze(Tensor x, std::vector<int64_t> axes) {
  return builder_of(x, "squeeze")->add("squeeze", {x}, {{"axes", std::move(axes)}});
}

Tensor unsqueeze(Tensor x, int64_t axis) { return builder_of(x, "unsqueeze")->add("unsqueeze", {x}, {{"axis", axis}}); }

}  // namespace tessera
