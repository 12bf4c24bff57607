// The reference semantics of the weight-only quantized ops (quant_ops.h), in
// double precision, written from the format description alone: each op
// dequantizes the whole weight into a double matrix (the NF4 values typed in
// here from the QLoRA paper's table; the double-quantization map read from
// the nested_quant_map input) and multiplies with Eigen. Output shapes and
// dtypes are re-derived here and checked by the driver. It does not check
// the byte layout against anything but this file's own reading of it: the
// tests check the layout (nibble order, blocks) independently.
#include <Eigen/Dense>
#include <cmath>

#include "reference/reference_internal.h"

namespace tessera::ref::detail {

namespace {

using Ins = std::vector<const RefTensor*>;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// NF4 (QLoRA, Dettmers et al. 2023, appendix E), ascending.
const double kNF4[16] = {-1.0,
                         -0.6961928009986877,
                         -0.5250730514526367,
                         -0.39491748809814453,
                         -0.28444138169288635,
                         -0.18477343022823334,
                         -0.09105003625154495,
                         0.0,
                         0.07958029955625534,
                         0.16093020141124725,
                         0.24611230194568634,
                         0.33791524171829224,
                         0.44070982933044434,
                         0.5626170039176941,
                         0.7229568362236023,
                         1.0};

std::string type_str(const RefTensor& t) { return to_string(TensorType{t.dtype, t.shape}); }

void expect(const RefTensor& t, DType dtype, const Shape& shape, const char* what) {
  if (t.dtype != dtype || t.shape != shape)
    fail(what, " must be ", to_string(TensorType{dtype, shape}), ", got ", type_str(t));
}

int64_t up(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The dequantized NF4 weight [N, K] from inputs in[first...]; returns how
// many inputs it used.
int nf4_weight(const Ins& in, size_t first, int64_t N, int64_t K, RowMat& W) {
  const int64_t numel = N * K, blocks = up(numel, 64);
  if (in.size() < first + 2) fail("needs weight and absmax");
  const RefTensor& packed = *in[first];
  expect(packed, DType::u8, {up(numel, 2), 1}, "weight");
  const RefTensor& am = *in[first + 1];
  std::vector<double> absmax(blocks);
  int used = 2;
  if (am.dtype == DType::u8) {
    if (in.size() < first + 5) fail("double quantization needs nested_absmax, nested_quant_map, nested_offset");
    expect(am, DType::u8, {blocks}, "absmax");
    const RefTensor &nested = *in[first + 2], &map = *in[first + 3], &offset = *in[first + 4];
    expect(nested, DType::f32, {up(blocks, 256)}, "nested_absmax");
    expect(map, DType::f32, {256}, "nested_quant_map");
    expect(offset, DType::f32, {}, "nested_offset");
    for (int64_t b = 0; b < blocks; ++b)
      absmax[b] = map.data[static_cast<size_t>(am.data[b])] * nested.data[b / 256] + offset.data[0];
    used = 5;
  } else {
    expect(am, DType::f32, {blocks}, "absmax");
    absmax = am.data;
  }
  W.resize(N, K);
  for (int64_t e = 0; e < numel; ++e) {
    const int byte = static_cast<int>(packed.data[e / 2]);
    const int code = e % 2 == 0 ? byte / 16 : byte % 16;
    W(e / K, e % K) = kNF4[code] * absmax[e / 64];
  }
  return used;
}

RowMat int8_weight(const RefTensor& w, const RefTensor& scale) {
  if (w.dtype != DType::i8 || w.shape.size() != 2) fail("weight must be i8[out, in], got ", type_str(w));
  const int64_t N = w.shape[0], K = w.shape[1];
  expect(scale, DType::f32, {N}, "scale");
  RowMat W(N, K);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) W(n, k) = w.data[n * K + k] * scale.data[n];
  return W;
}

RefTensor result(Shape shape) {
  RefTensor r;
  r.data.assign(static_cast<size_t>(numel(shape)), 0.0);
  r.shape = std::move(shape);
  r.dtype = DType::f32;
  return r;
}

RefTensor from_matrix(const RowMat& W) {
  RefTensor r = result({W.rows(), W.cols()});
  Eigen::Map<RowMat>(r.data.data(), W.rows(), W.cols()) = W;
  return r;
}

// y[..., N] = x[..., K] W^T (+ bias), or for `transposed` dx[..., K] = g[..., N] W.
RefTensor apply(const RefTensor& x, const RowMat& W, const RefTensor* bias, bool transposed) {
  if (x.dtype != DType::f32) fail("x must be f32, got ", type_str(x));
  const int64_t in = transposed ? W.rows() : W.cols(), out = transposed ? W.cols() : W.rows();
  if (x.shape.empty() || x.shape.back() != in) fail("x ", type_str(x), " does not have ", in, " features");
  Shape s = x.shape;
  s.back() = out;
  RefTensor r = result(s);
  const int64_t rows = x.numel() / in;
  Eigen::Map<const RowMat> X(x.data.data(), rows, in);
  Eigen::Map<RowMat> Y(r.data.data(), rows, out);
  if (transposed) Y.noalias() = X * W;
  else Y.noalias() = X * W.transpose();
  if (bias) {
    expect(*bias, DType::f32, {out}, "bias");
    Y.rowwise() += Eigen::Map<const Eigen::RowVectorXd>(bias->data.data(), out);
  }
  return r;
}

int64_t dim(const Node& n, const char* key) { return attr_int(n.attrs, key, n.op); }

}  // namespace

void add_quant_ops(std::map<std::string, LibraryOpFn>& m) {
  m["dequantize_int8"] = [](const Node&, const Ins& in) {
    if (in.size() != 2) fail("takes 2 inputs");
    return from_matrix(int8_weight(*in[0], *in[1]));
  };
  m["dequantize_nf4"] = [](const Node& n, const Ins& in) {
    RowMat W;
    if (nf4_weight(in, 0, dim(n, "out_features"), dim(n, "in_features"), W) != static_cast<int>(in.size()))
      fail("unexpected extra inputs");
    return from_matrix(W);
  };
  m["linear_int8"] = [](const Node&, const Ins& in) {
    if (in.size() < 3 || in.size() > 4) fail("takes 3 or 4 inputs");
    return apply(*in[0], int8_weight(*in[1], *in[2]), in.size() == 4 ? in[3] : nullptr, false);
  };
  m["linear_nf4"] = [](const Node& n, const Ins& in) {
    RowMat W;
    const size_t used = 1 + nf4_weight(in, 1, dim(n, "out_features"), dim(n, "in_features"), W);
    if (in.size() > used + 1) fail("too many inputs");
    return apply(*in[0], W, in.size() == used + 1 ? in[used] : nullptr, false);
  };
  m["linear_int8_grad_input"] = [](const Node&, const Ins& in) {
    if (in.size() != 3) fail("takes 3 inputs");
    return apply(*in[0], int8_weight(*in[1], *in[2]), nullptr, true);
  };
  m["linear_nf4_grad_input"] = [](const Node& n, const Ins& in) {
    RowMat W;
    if (1 + nf4_weight(in, 1, dim(n, "out_features"), dim(n, "in_features"), W) != static_cast<int>(in.size()))
      fail("unexpected extra inputs");
    return apply(*in[0], W, nullptr, true);
  };
}

}  // namespace tessera::ref::detail
