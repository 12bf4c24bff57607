// Quantizing weights on the host (quantize.h): int8 per-output-channel absmax
// and NF4 blockwise with optional double quantization, in the layouts of
// quant_ops.h. Plain C++ over Buffers; it builds no graph (quantize.cpp does).
#include <algorithm>
#include <cmath>

#include "tessera/error.h"
#include "tessera/quant_ops.h"
#include "tessera/quantize.h"

namespace tessera {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The weight as f32 values, after checking it is a float [N, K].
std::vector<float> weight_values(const Buffer& w, const char* who) {
  if (!w.defined()) fail(who, ": the weight is an empty Buffer");
  if ((w.dtype() != DType::f32 && w.dtype() != DType::bf16) || w.shape().size() != 2)
    fail(who, ": the weight must be f32 or bf16 [out, in], got ", to_string(w.type()));
  std::vector<float> v(static_cast<size_t>(w.numel()));
  for (int64_t i = 0; i < w.numel(); ++i) v[i] = static_cast<float>(w.get(i));
  return v;
}

// Index of the value of sorted `code` nearest to x (ties to the lower index).
template <size_t n>
int nearest(const std::array<float, n>& code, float x) {
  const auto it = std::lower_bound(code.begin(), code.end(), x);
  if (it == code.begin()) return 0;
  if (it == code.end()) return static_cast<int>(n) - 1;
  const int hi = static_cast<int>(it - code.begin()), lo = hi - 1;
  return x - code[lo] <= code[hi] - x ? lo : hi;
}

}  // namespace

Int8Weight quantize_int8(const Buffer& weight) {
  const std::vector<float> w = weight_values(weight, "quantize_int8");
  const int64_t N = weight.shape()[0], K = weight.shape()[1];
  Int8Weight r{Buffer(DType::i8, {N, K}), Buffer(DType::f32, {N})};
  int8_t* q = r.weight.data_as<int8_t>();
  float* scale = r.scale.data_as<float>();
  for (int64_t n = 0; n < N; ++n) {
    float absmax = 0;
    for (int64_t k = 0; k < K; ++k) absmax = std::max(absmax, std::fabs(w[n * K + k]));
    scale[n] = absmax / 127.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float v = scale[n] > 0 ? std::nearbyint(w[n * K + k] / scale[n]) : 0.0f;
      q[n * K + k] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
  return r;
}

NF4Weight quantize_nf4(const Buffer& weight, bool double_quant) {
  const std::vector<float> w = weight_values(weight, "quantize_nf4");
  const int64_t numel = static_cast<int64_t>(w.size()), blocks = ceil_div(numel, kNF4BlockSize);
  const std::array<float, 16>& nf4 = nf4_code_book();
  std::vector<float> absmax(blocks, 0.0f);
  for (int64_t e = 0; e < numel; ++e) absmax[e / kNF4BlockSize] = std::max(absmax[e / kNF4BlockSize], std::fabs(w[e]));
  NF4Weight r;
  r.weight = Buffer(DType::u8, {ceil_div(numel, 2), 1});
  uint8_t* packed = r.weight.data_as<uint8_t>();
  for (int64_t e = 0; e < numel; ++e) {
    const float a = absmax[e / kNF4BlockSize];
    const int code = a > 0 ? nearest(nf4, w[e] / a) : 7;  // nf4[7] == 0
    packed[e / 2] = static_cast<uint8_t>(packed[e / 2] | (e % 2 == 0 ? code << 4 : code));
  }
  if (!double_quant) {
    r.absmax = Buffer(DType::f32, {blocks});
    std::copy(absmax.begin(), absmax.end(), r.absmax.data_as<float>());
    return r;
  }
  double sum = 0;
  for (float a : absmax) sum += a;
  const float offset = static_cast<float>(sum / static_cast<double>(blocks));
  const int64_t nested = ceil_div(blocks, kNestedBlockSize);
  const std::array<float, 256>& map = dynamic_map_signed();
  r.absmax = Buffer(DType::u8, {blocks});
  r.nested_absmax = Buffer(DType::f32, {nested});
  r.nested_quant_map = Buffer(DType::f32, {256});
  r.nested_offset = Buffer(DType::f32, {});
  std::copy(map.begin(), map.end(), r.nested_quant_map.data_as<float>());
  r.nested_offset.data_as<float>()[0] = offset;
  float* am2 = r.nested_absmax.data_as<float>();
  uint8_t* codes = r.absmax.data_as<uint8_t>();
  for (int64_t c = 0; c < nested; ++c) {
    const int64_t lo = c * kNestedBlockSize, hi = std::min(blocks, lo + kNestedBlockSize);
    float m = 0;
    for (int64_t b = lo; b < hi; ++b) m = std::max(m, std::fabs(absmax[b] - offset));
    am2[c] = m;
    for (int64_t b = lo; b < hi; ++b)
      codes[b] = static_cast<uint8_t>(m > 0 ? nearest(map, (absmax[b] - offset) / m) : 127);  // map[127] == 0
  }
  return r;
}

}  // namespace tessera
