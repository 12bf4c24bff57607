// The reference interpreter's driver: walks the graph in node order, feeds
// leaves (inputs, params, constants), dispatches every other node to the
// library-op or `define` evaluator, checks each result's type against the
// graph and rounds its values to the node's dtype. Also the dtype emulation
// (rounding, wrapping), shape helpers and Philox4x32-10. Op semantics live in
// reference_ops.cpp and reference_expr.cpp; nothing here runs Halide.
#include <cmath>
#include <limits>
#include <sstream>

#include "reference/reference.h"
#include "reference/reference_internal.h"
#include "tessera/error.h"

namespace tessera::ref {

double round_float(double x, int mant_bits, int emin, double max_finite) {
  if (!std::isfinite(x) || x == 0) return x;
  int e = 0;
  std::frexp(x, &e);  // |x| = m * 2^e, m in [0.5, 1): the unit exponent is e - 1
  int unit = std::max(e - 1, emin);
  double quantum = std::ldexp(1.0, unit - mant_bits);
  double r = std::nearbyint(x / quantum) * quantum;  // default rounding: to nearest, ties to even
  if (std::fabs(r) > max_finite) return std::copysign(std::numeric_limits<double>::infinity(), x);
  return r;
}

int64_t wrap_int(DType dtype, int64_t x) {
  const int bits = static_cast<int>(dtype_size(dtype) * 8);
  if (dtype == DType::boolean) return x != 0;
  if (bits >= 64) return x;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t u = static_cast<uint64_t>(x) & mask;
  if (dtype == DType::u8) return static_cast<int64_t>(u);
  if (u >= (uint64_t{1} << (bits - 1))) return static_cast<int64_t>(u) - (int64_t{1} << bits);
  return static_cast<int64_t>(u);
}

namespace {
// A double that is an integer, reduced modulo 2^64 to int64 bits.
int64_t double_to_int64_bits(double t) {
  constexpr double two64 = 18446744073709551616.0;
  double m = std::fmod(t, two64);  // exact; in (-2^64, 2^64)
  uint64_t u = m >= 0 ? static_cast<uint64_t>(m) : uint64_t{0} - static_cast<uint64_t>(-m);
  return static_cast<int64_t>(u);
}
}  // namespace

double to_dtype(DType dtype, double x) {
  switch (dtype) {
    case DType::f64: return x;
    case DType::f32: return static_cast<double>(static_cast<float>(x));
    case DType::f16: return round_float(x, 10, -14, 65504.0);
    case DType::bf16: return round_float(x, 7, -126, std::ldexp(255.0, 120));  // (2 - 2^-7) * 2^127
    case DType::boolean: return x != 0 ? 1.0 : 0.0;
    case DType::i64:
    case DType::i32:
    case DType::i8:
    case DType::u8: {
      if (std::isnan(x)) return 0;
      if (std::isinf(x)) return 0;  // undefined in the spec; any fixed answer will do
      return static_cast<double>(wrap_int(dtype, double_to_int64_bits(std::trunc(x))));
    }
  }
  return x;
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += W0;
      key[1] += W1;
    }
    const uint64_t p0 = static_cast<uint64_t>(M0) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(M1) * ctr[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

namespace detail {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int d = static_cast<int>(s.size()) - 2; d >= 0; --d) st[d] = st[d + 1] * s[d + 1];
  return st;
}

std::vector<int64_t> unravel(int64_t flat, const Shape& s) {
  std::vector<int64_t> idx(s.size(), 0);
  for (int d = static_cast<int>(s.size()) - 1; d >= 0; --d) {
    idx[d] = flat % s[d];
    flat /= s[d];
  }
  return idx;
}

Shape broadcast(const Shape& a, const Shape& b) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i + a.size() < r ? 1 : a[i + a.size() - r];
    const int64_t db = i + b.size() < r ? 1 : b[i + b.size() - r];
    if (da != db && da != 1 && db != 1)
      fail("shapes ", shape_str(a), " and ", shape_str(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcast_map(const Shape& in, const Shape& out) {
  if (in.size() > out.size()) fail("cannot broadcast ", shape_str(in), " to ", shape_str(out));
  const size_t lead = out.size() - in.size();
  std::vector<int64_t> in_st = strides_of(in);
  std::vector<int64_t> st(out.size(), 0);  // stride into `in` per output dim
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != out[lead + i] && in[i] != 1)
      fail("cannot broadcast ", shape_str(in), " to ", shape_str(out));
    st[lead + i] = in[i] == 1 ? 0 : in_st[i];
  }
  const int64_t n = numel(out);
  std::vector<int64_t> map(static_cast<size_t>(n));
  std::vector<int64_t> idx(out.size(), 0);
  int64_t pos = 0;
  for (int64_t k = 0; k < n; ++k) {
    map[k] = pos;
    for (int d = static_cast<int>(out.size()) - 1; d >= 0; --d) {  // odometer increment
      if (++idx[d] < out[d]) {
        pos += st[d];
        break;
      }
      pos -= st[d] * (out[d] - 1);
      idx[d] = 0;
    }
  }
  return map;
}

int64_t norm_axis(int64_t axis, int64_t rank, const std::string& what) {
  const int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(what, " ", axis, " is out of range for rank ", rank);
  return a;
}

}  // namespace detail

std::vector<RefTensor> evaluate_all(const Graph& g, const std::map<std::string, RefTensor>& args) {
  std::vector<RefTensor> vals(g.nodes.size());
  for (size_t id = 0; id < g.nodes.size(); ++id) {
    const Node& n = g.nodes[id];
    RefTensor r;
    if (n.op == "input" || n.op == "param") {
      auto it = args.find(n.name);
      if (it == args.end())
        fail("reference: no argument for ", n.op, " '", n.name, "' (", to_string(n.type), ")");
      if (it->second.shape != n.type.shape)
        fail("reference: ", n.op, " '", n.name, "' has shape ", to_string(n.type.shape), " but the argument has shape ",
             to_string(it->second.shape));
      if (static_cast<int64_t>(it->second.data.size()) != n.type.numel())
        fail("reference: argument '", n.name, "' holds ", it->second.data.size(), " values for shape ",
             to_string(n.type.shape));
      r = it->second;
      r.dtype = n.type.dtype;
    } else if (n.op == "constant") {
      r.shape = n.type.shape;
      r.dtype = n.type.dtype;
      const int64_t count = n.type.numel();
      if (n.values.size() == 1) r.data.assign(static_cast<size_t>(count), n.values[0]);
      else if (static_cast<int64_t>(n.values.size()) == count) r.data = n.values;
      else fail("reference: constant '", n.name, "' holds ", n.values.size(), " values for ", to_string(n.type));
    } else {
      std::vector<const RefTensor*> in;
      for (int i : n.inputs) {
        if (i < 0 || i >= static_cast<int>(id)) fail("reference: node '", n.name, "' reads node ", i, " out of order");
        in.push_back(&vals[i]);
      }
      try {
        r = n.op == "define"        ? detail::eval_define(n, in)
            : n.op == "define_grad" ? detail::eval_define_grad(n, in)
                                    : detail::eval_library_op(n, in);
      } catch (const Error& e) {
        fail("reference: ", n.op, " '", n.name, "': ", e.what());
      }
      if (r.shape != n.type.shape || r.dtype != n.type.dtype) {
        std::string in_types;
        for (size_t k = 0; k < n.inputs.size(); ++k)
          in_types += (k ? ", " : "") + to_string(g.nodes[n.inputs[k]].type);
        fail("reference: ", n.op, " '", n.name, "': the graph gives it type ", to_string(n.type),
             " but the reference infers ", to_string(TensorType{r.dtype, r.shape}), " (inputs: ", in_types, ")");
      }
    }
    for (double& v : r.data) v = to_dtype(n.type.dtype, v);
    r.dtype = n.type.dtype;
    vals[id] = std::move(r);
  }
  return vals;
}

std::map<std::string, RefTensor> evaluate(const Graph& g, const std::map<std::string, RefTensor>& args) {
  std::vector<RefTensor> vals = evaluate_all(g, args);
  std::map<std::string, RefTensor> out;
  for (const GraphOutput& o : g.outputs) {
    if (o.node < 0 || o.node >= static_cast<int>(vals.size()))
      fail("reference: output '", o.name, "' names no node (id ", o.node, ")");
    out[o.name] = vals[o.node];
  }
  return out;
}

}  // namespace tessera::ref
