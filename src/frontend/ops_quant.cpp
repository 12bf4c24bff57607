// The weight-only quantized ops of quant_ops.h: dequantize_int8/_nf4, the
// fused linear_int8/_nf4 and their gradients with respect to x
// (linear_*_grad_input). Each is defined once, Halide-style; the dequantized
// weight is a Func the schedules inline or compute a tile at a time, never a
// materialized tensor.
//
// Convention the schedules rely on (src/schedules/cpu_x86.cpp,
// cuda_common.cpp): for the linear and grad_input ops, stages[0] is the
// accumulator over the row-major output vars (pure init 0, one update over
// an RDom), stages[1] the dequantized weight deq(n, k) (row-major [N, K];
// for linear_int8 without the scale, which the output applies), and, with
// NF4 double quantization, stages named "<node>_codes" (the absmax codes as
// i32; dequantize_nf4 has it too) and "<node>_absmax" (the f32 absmax per
// block); linear_nf4_grad_input
// with an even K reads deq through a stage "<node>_pairs" (nf4_pairs below).
// linear_nf4 with an even K reduces over byte pairs (RDom j < K/2, elements
// 2j and 2j+1), so that the packed weight is read densely; with an odd K,
// over k.
// This file does not schedule, quantize (src/transforms/quantize_weights.cpp)
// or differentiate (src/transforms/vjp_quant.cpp).
#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "tessera/error.h"
#include "tessera/quant_ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;
using namespace opsutil;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- type rules ------------------------------------------------------------------

void need_type(const TensorType& got, DType dtype, const Shape& shape, const char* tensor, const std::string& why) {
  if (got.dtype != dtype || got.shape != shape)
    fail(tensor, " must be ", to_string(TensorType{dtype, shape}), why, ", got ", to_string(got));
}

std::string nk(int64_t N, int64_t K) {
  return " for out_features " + std::to_string(N) + ", in_features " + std::to_string(K);
}

// The NF4 weight group starting at in[first]: checks it and returns how many
// inputs it takes (2, or 5 with double quantization).
int check_nf4(const std::vector<TensorType>& in, size_t first, int64_t N, int64_t K) {
  if (N < 1 || K < 1) fail("out_features and in_features must be >= 1, got ", N, " and ", K);
  const int64_t numel = N * K, blocks = ceil_div(numel, kNF4BlockSize);
  if (in.size() < first + 2) fail("needs the packed weight and its absmax");
  need_type(in[first], DType::u8, {ceil_div(numel, 2), 1}, "weight (packed, two codes a byte)", nk(N, K));
  const bool nested = in[first + 1].dtype == DType::u8;
  need_type(in[first + 1], nested ? DType::u8 : DType::f32, {blocks}, "absmax (one per block of 64)", nk(N, K));
  if (!nested) return 2;
  if (in.size() < first + 5)
    fail("absmax is u8 (double quantization) but nested_absmax, nested_quant_map and nested_offset are missing");
  need_type(in[first + 2], DType::f32, {ceil_div(blocks, kNestedBlockSize)}, "nested_absmax (one per 256 blocks)",
            " for " + std::to_string(blocks) + " blocks");
  need_type(in[first + 3], DType::f32, {256}, "nested_quant_map", "");
  need_type(in[first + 4], DType::f32, {}, "nested_offset", "");
  return 5;
}

void check_bias(const std::vector<TensorType>& in, size_t i, int64_t N) {
  if (in.size() > i + 1) fail("takes at most one bias after the weight tensors, got ", in.size() - i, " more inputs");
  if (in.size() == i + 1) need_type(in[i], DType::f32, {N}, "bias", " for out_features " + std::to_string(N));
}

void check_x(const TensorType& x, int64_t features, const char* what) {
  if (x.dtype != DType::f32) fail(what, " must be f32, got ", to_string(x));
  if (x.rank() < 1 || x.shape.back() != features)
    fail(what, " must be f32[..., ", features, "], got ", to_string(x));
}

int64_t attr_dim(const Attrs& a, const char* key, const std::string& op) { return attr_int(a, key, op); }

TensorType dequantize_int8_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType &w = in[0], &s = in[1];
  if (w.dtype != DType::i8 || w.rank() != 2) fail("weight must be i8[out, in], got ", to_string(w));
  need_type(s, DType::f32, {w.shape[0]}, "scale (one per output channel)", " for weight " + to_string(w));
  return TensorType{DType::f32, w.shape};
}

TensorType dequantize_nf4_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const int64_t N = attr_dim(a, "out_features", "dequantize_nf4"), K = attr_dim(a, "in_features", "dequantize_nf4");
  const int n = check_nf4(in, 0, N, K);
  if (static_cast<int>(in.size()) != n) fail("takes ", n, " inputs for this absmax dtype, got ", in.size());
  return TensorType{DType::f32, {N, K}};
}

TensorType linear_int8_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType& w = in[1];
  if (w.dtype != DType::i8 || w.rank() != 2) fail("weight must be i8[out, in], got ", to_string(w));
  check_x(in[0], w.shape[1], "x");
  need_type(in[2], DType::f32, {w.shape[0]}, "scale (one per output channel)", " for weight " + to_string(w));
  check_bias(in, 3, w.shape[0]);
  Shape out = in[0].shape;
  out.back() = w.shape[0];
  return TensorType{DType::f32, out};
}

TensorType linear_nf4_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const int64_t N = attr_dim(a, "out_features", "linear_nf4"), K = attr_dim(a, "in_features", "linear_nf4");
  check_x(in[0], K, "x");
  const int n = check_nf4(in, 1, N, K);
  check_bias(in, 1 + n, N);
  Shape out = in[0].shape;
  out.back() = N;
  return TensorType{DType::f32, out};
}

TensorType int8_grad_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType& w = in[1];
  if (w.dtype != DType::i8 || w.rank() != 2) fail("weight must be i8[out, in], got ", to_string(w));
  check_x(in[0], w.shape[0], "the gradient g");
  need_type(in[2], DType::f32, {w.shape[0]}, "scale (one per output channel)", " for weight " + to_string(w));
  Shape out = in[0].shape;
  out.back() = w.shape[1];
  return TensorType{DType::f32, out};
}

TensorType nf4_grad_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const int64_t N = attr_dim(a, "out_features", "linear_nf4_grad_input");
  const int64_t K = attr_dim(a, "in_features", "linear_nf4_grad_input");
  check_x(in[0], N, "the gradient g");
  const int n = check_nf4(in, 1, N, K);
  if (static_cast<int>(in.size()) != 1 + n) fail("takes ", 1 + n, " inputs for this absmax dtype, got ", in.size());
  Shape out = in[0].shape;
  out.back() = K;
  return TensorType{DType::f32, out};
}

// ---- algorithms ----------------------------------------------------------------

// The NF4 value of a 4-bit code (a u8 Expr): a tree of selects on its bits
// (15 selects, 4 bit tests in 8-bit lanes), which vectorizes on every target.
Expr nf4_value(const Expr& code) {
  std::vector<Expr> level;
  for (float v : nf4_code_book()) level.emplace_back(v);
  for (int bit = 0; bit < 4; ++bit) {
    Expr set = (code & Halide::cast<uint8_t>(1 << bit)) != Halide::cast<uint8_t>(0);
    std::vector<Expr> next;
    for (size_t i = 0; i + 1 < level.size(); i += 2) next.push_back(Halide::select(set, level[i + 1], level[i]));
    level = next;
  }
  return level[0];
}

// The NF4 weight's Funcs: the f32 absmax per block (a stage of its own with
// double quantization, else the input) and deq(n, k).
struct NF4Funcs {
  Func absmax;           // over blocks (row-major [nblocks])
  Func deq;              // row-major [N, K]
  bool staged = false;   // absmax is a stage of its own
  Func codes;            // with double quantization: the absmax codes as i32, a stage
};

NF4Funcs nf4_funcs(const DefineContext& c, size_t first, int64_t K, bool stage_absmax) {
  const std::string& name = c.node.name;
  NF4Funcs r;
  const bool nested = c.input_types[first + 1].dtype == DType::u8;
  Halide::Var b("b");
  if (nested) {
    // The codes go through a Func of their own: Halide bounds a lookup
    // through a Func by the Func's value range (0..255), but a lookup
    // straight from an input of one block by that byte's value, read on the
    // host (a null host pointer on the GPU).
    r.codes = make_func(name + "_codes", {b}, Halide::cast<int>(at(c.inputs[first + 1], {b})));
    Expr code = at(r.codes, {b});
    Expr value = at(c.inputs[first + 3], {code}) * at(c.inputs[first + 2], {b / static_cast<int>(kNestedBlockSize)}) +
                 at(c.inputs[first + 4], {});
    r.absmax = make_func(name + "_absmax", {b}, value);
    r.staged = stage_absmax;
  } else {
    r.absmax = c.inputs[first + 1];
  }
  auto v = make_vars(2);
  Expr e = v[0] * static_cast<int>(K) + v[1];
  Expr byte = at(c.inputs[first], {e / 2, 0});
  Expr code = Halide::select(e % 2 == 0, byte >> Halide::cast<uint8_t>(4), byte & Halide::cast<uint8_t>(15));
  r.deq = make_func(name + "_deq", v, nf4_value(code) * at(r.absmax, {e / static_cast<int>(kNF4BlockSize)}));
  return r;
}

// int8: deq(n, k) = weight(n, k) (* scale(n) when `scaled`).
Func int8_deq(const DefineContext& c, bool scaled) {
  auto v = make_vars(2);
  Expr w = Halide::cast<float>(at(c.inputs[1], {v[0], v[1]}));
  if (scaled) w = w * at(c.inputs[2], {v[0]});
  return make_func(c.node.name + "_deq", v, w);
}

Definition dequantize_int8_define(const DefineContext& c) {
  auto v = make_vars(2);
  Expr w = Halide::cast<float>(at(c.inputs[0], {v[0], v[1]})) * at(c.inputs[1], {v[0]});
  return Definition{make_func(c.node.name, v, w), {}};
}

Definition dequantize_nf4_define(const DefineContext& c) {
  const int64_t K = attr_int(c.node.attrs, "in_features", c.node.op);
  NF4Funcs q = nf4_funcs(c, 0, K, false);
  auto v = make_vars(2);
  Definition d{make_func(c.node.name, v, at(q.deq, {v[0], v[1]})), {}};
  if (q.codes.defined()) d.stages.push_back(q.codes);
  return d;
}

// linear_int8 / linear_nf4: out[..., n] = sum_k x[..., k] deq(n, k) (* scale) (+ bias).
Definition linear_q_define(const DefineContext& c, bool nf4) {
  const Shape& out = c.node.type.shape;
  const int rank = static_cast<int>(out.size());
  const int64_t K = c.input_types[0].shape.back();
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  Expr n = idx.back();
  std::vector<Expr> rows(idx.begin(), idx.end() - 1);
  auto x_at = [&](Expr k) {
    std::vector<Expr> i = rows;
    i.push_back(k);
    return at(c.inputs[0], i);
  };
  NF4Funcs q;
  Func deq;
  size_t bias = 3;
  if (nf4) {
    q = nf4_funcs(c, 1, K, true);
    deq = q.deq;
    bias = c.input_types[2].dtype == DType::u8 ? 6 : 3;
  } else {
    deq = int8_deq(c, false);
  }
  Func acc(c.node.name + "_acc");
  define_pure(acc, v, Expr(0.0f));
  if (nf4 && K % 2 == 0) {
    Halide::RDom j(0, static_cast<int>(K / 2), "k");
    ref(acc, idx) += x_at(2 * j) * at(deq, {n, 2 * j}) + x_at(2 * j + 1) * at(deq, {n, 2 * j + 1});
  } else {
    Halide::RDom k(0, static_cast<int>(K), "k");
    ref(acc, idx) += x_at(k) * at(deq, {n, k});
  }
  Expr r = at(acc, idx);
  if (!nf4) r = r * at(c.inputs[2], {n});
  if (c.inputs.size() > bias) r = r + at(c.inputs[bias], {n});
  Definition d{make_func(c.node.name, v, r), {acc, deq}};
  if (q.staged) d.stages.insert(d.stages.end(), {q.codes, q.absmax});
  return d;
}

// The NF4 weight of an even K as pairs(n, j, h) = W[n, 2j + h] (row-major
// [N, K/2, 2]): a row's byte j holds both, so a schedule that computes a run
// of pairs reads the packed bytes densely; deq(n, k) = pairs(n, k/2, k%2).
Func nf4_pairs(const DefineContext& c, const NF4Funcs& q, int64_t K) {
  auto v = make_vars(3);
  Expr byte = at(c.inputs[1], {v[0] * static_cast<int>(K / 2) + v[1], 0});
  Expr code = Halide::select(v[2] == 0, byte >> Halide::cast<uint8_t>(4), byte & Halide::cast<uint8_t>(15));
  Expr e = v[0] * static_cast<int>(K) + 2 * v[1];
  return make_func(c.node.name + "_pairs", v, nf4_value(code) * at(q.absmax, {e / static_cast<int>(kNF4BlockSize)}));
}

// linear_*_grad_input: dx[..., k] = sum_n g[..., n] deq(n, k) (scaled).
Definition grad_input_define(const DefineContext& c, bool nf4) {
  const Shape& out = c.node.type.shape;
  const int rank = static_cast<int>(out.size());
  const int64_t N = c.input_types[0].shape.back(), K = out.back();
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  Expr k = idx.back();
  std::vector<Expr> gi(idx.begin(), idx.end() - 1);
  NF4Funcs q;
  Func deq, pairs;
  if (nf4) {
    q = nf4_funcs(c, 1, K, true);
    deq = q.deq;
    if (K % 2 == 0) {
      pairs = nf4_pairs(c, q, K);
      auto dv = make_vars(2);
      deq = make_func(c.node.name + "_deqpairs", dv, at(pairs, {dv[0], dv[1] / 2, dv[1] % 2}));
    }
  } else {
    deq = int8_deq(c, true);
  }
  Halide::RDom r(0, static_cast<int>(N), "n");
  gi.push_back(r);
  Func acc(c.node.name + "_acc");
  define_pure(acc, v, Expr(0.0f));
  ref(acc, idx) += at(c.inputs[0], gi) * at(deq, {r, k});
  Definition d{make_func(c.node.name, v, at(acc, idx)), {acc, deq}};
  if (q.staged) d.stages.insert(d.stages.end(), {q.codes, q.absmax});
  if (pairs.defined()) d.stages.push_back(pairs);
  return d;
}

OpDef make_op(const char* name, OpKind kind, int lo, int hi,
              std::function<TensorType(const std::vector<TensorType>&, const Attrs&)> infer,
              std::function<Definition(const DefineContext&)> define) {
  OpDef d;
  d.name = name;
  d.kind = kind;
  d.min_inputs = lo;
  d.max_inputs = hi;
  d.infer = std::move(infer);
  d.define = std::move(define);
  return d;
}

const bool registered = [] {
  // Dequantize reads the packed weight at computed positions, as a gather does.
  register_op(make_op("dequantize_int8", OpKind::gather, 2, 2, dequantize_int8_infer, dequantize_int8_define));
  register_op(make_op("dequantize_nf4", OpKind::gather, 2, 5, dequantize_nf4_infer, dequantize_nf4_define));
  register_op(make_op("linear_int8", OpKind::contraction, 3, 4, linear_int8_infer,
                      [](const DefineContext& c) { return linear_q_define(c, false); }));
  register_op(make_op("linear_nf4", OpKind::contraction, 3, 7, linear_nf4_infer,
                      [](const DefineContext& c) { return linear_q_define(c, true); }));
  register_op(make_op("linear_int8_grad_input", OpKind::contraction, 3, 3, int8_grad_infer,
                      [](const DefineContext& c) { return grad_input_define(c, false); }));
  register_op(make_op("linear_nf4_grad_input", OpKind::contraction, 3, 6, nf4_grad_infer,
                      [](const DefineContext& c) { return grad_input_define(c, true); }));
  return true;
}();

// The NF4 tensors as node inputs, and the attributes.
std::vector<Tensor> nf4_inputs(const NF4Tensors& w, const char* op) {
  builder_of(w.weight, op);
  builder_of(w.absmax, op);
  std::vector<Tensor> in = {w.weight, w.absmax};
  if (w.nested_absmax.defined() || w.nested_quant_map.defined() || w.nested_offset.defined()) {
    builder_of(w.nested_absmax, op);
    builder_of(w.nested_quant_map, op);
    builder_of(w.nested_offset, op);
    in.insert(in.end(), {w.nested_absmax, w.nested_quant_map, w.nested_offset});
  }
  return in;
}

Attrs nf4_attrs(const NF4Tensors& w) { return {{"out_features", w.out_features}, {"in_features", w.in_features}}; }

}  // namespace

void link_quant_ops() { (void)registered; }

Tensor dequantize_int8(Tensor weight, Tensor scale) {
  builder_of(scale, "dequantize_int8");
  return builder_of(weight, "dequantize_int8")->add("dequantize_int8", {weight, scale});
}

Tensor dequantize_nf4(const NF4Tensors& w) {
  std::vector<Tensor> in = nf4_inputs(w, "dequantize_nf4");
  return w.weight.builder()->add("dequantize_nf4", in, nf4_attrs(w));
}

Tensor linear_int8(Tensor x, Tensor weight, Tensor scale, Tensor bias) {
  builder_of(weight, "linear_int8");
  builder_of(scale, "linear_int8");
  std::vector<Tensor> in = {x, weight, scale};
  if (bias.defined()) in.push_back(bias);
  return builder_of(x, "linear_int8")->add("linear_int8", in);
}

Tensor linear_nf4(Tensor x, const NF4Tensors& w, Tensor bias) {
  std::vector<Tensor> in = {x};
  for (const Tensor& t : nf4_inputs(w, "linear_nf4")) in.push_back(t);
  if (bias.defined()) in.push_back(bias);
  return builder_of(x, "linear_nf4")->add("linear_nf4", in, nf4_attrs(w));
}

Tensor linear_int8_grad_input(Tensor g, Tensor weight, Tensor scale) {
  builder_of(weight, "linear_int8_grad_input");
  builder_of(scale, "linear_int8_grad_input");
  return builder_of(g, "linear_int8_grad_input")->add("linear_int8_grad_input", {g, weight, scale});
}

Tensor linear_nf4_grad_input(Tensor g, const NF4Tensors& w) {
  std::vector<Tensor> in = {g};
  for (const Tensor& t : nf4_inputs(w, "linear_nf4_grad_input")) in.push_back(t);
  return builder_of(g, "linear_nf4_grad_input")->add("linear_nf4_grad_input", in, nf4_attrs(w));
}

}  // namespace tessera
