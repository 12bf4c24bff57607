// The test's own attention (forward, logsumexp and gradient) in double,
// written from the definitions, and helpers to compare results and to place
// heads as GPT does. Shared by test_cuda_attention (tessera's kernels) and
// test_cuda_cudnn_attention (cuDNN's); computes nothing on the device.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace tessera::cuda {

struct Case {
  int64_t batch, seq, dim;
  bool causal;
};

struct Reference {
  std::vector<double> out, dq, dk, dv;
  std::vector<double> lse;  // per query row: log of the sum of exp(scaled, masked scores)
};

// Attention and its gradient for one [batch, seq, dim] problem, in double.
inline Reference reference(const Case& c, double scale, const std::vector<double>& q, const std::vector<double>& k,
                           const std::vector<double>& v, const std::vector<double>& g) {
  const int64_t T = c.seq, D = c.dim;
  Reference r;
  r.out.assign(q.size(), 0);
  r.dq.assign(q.size(), 0);
  r.dk.assign(q.size(), 0);
  r.dv.assign(q.size(), 0);
  for (int64_t b = 0; b < c.batch; ++b) {
    const int64_t o = b * T * D;
    std::vector<double> P(T * T, 0), dP(T * T, 0);
    for (int64_t i = 0; i < T; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < T; ++j) {
        if (c.causal && j > i) continue;
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += q[o + i * D + d] * k[o + j * D + d];
        P[i * T + j] = s * scale;
        mx = std::max(mx, s * scale);
      }
      double sum = 0;
      for (int64_t j = 0; j < T; ++j) {
        P[i * T + j] = c.causal && j > i ? 0 : std::exp(P[i * T + j] - mx);
        sum += P[i * T + j];
      }
      for (int64_t j = 0; j < T; ++j) P[i * T + j] /= sum;
      r.lse.push_back(mx + std::log(sum));
    }
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j)
        for (int64_t d = 0; d < D; ++d) {
          r.out[o + i * D + d] += P[i * T + j] * v[o + j * D + d];
          r.dv[o + j * D + d] += P[i * T + j] * g[o + i * D + d];
          dP[i * T + j] += g[o + i * D + d] * v[o + j * D + d];
        }
    for (int64_t i = 0; i < T; ++i) {
      double row = 0;
      for (int64_t j = 0; j < T; ++j) row += P[i * T + j] * dP[i * T + j];
      for (int64_t j = 0; j < T; ++j) {
        const double ds = P[i * T + j] * (dP[i * T + j] - row) * scale;
        for (int64_t d = 0; d < D; ++d) {
          r.dq[o + i * D + d] += ds * k[o + j * D + d];
          r.dk[o + j * D + d] += ds * q[o + i * D + d];
        }
      }
    }
  }
  return r;
}

// Largest |got - want| relative to the largest |want|, or to 0.1 where that
// is smaller (dq and dk are 0 at seq 1: there TF32's rounding of dP against
// the f32 row term is all that is left).
inline double error_of(const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0, scale = 0.1;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::abs(got[i] - want[i]));
  }
  return worst / scale;
}

// Copies a dense [B * H, T, D] tensor `from` into the [B, T, width] buffer
// `to`, head h's D columns at col0 + h * D (GPT's layout of heads).
inline void scatter_heads(const std::vector<uint16_t>& from, std::vector<uint16_t>& to, int64_t B, int64_t H, int64_t T,
                          int64_t D, int64_t width, int64_t col0) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        std::memcpy(&to[(b * T + t) * width + col0 + h * D], &from[((b * H + h) * T + t) * D], D * 2);
}

// The inverse of scatter_heads: head h's D columns at col0 + h * D of a
// [B, T, width] buffer, as a dense [B * H, T, D] tensor.
inline std::vector<uint16_t> gather_heads(const std::vector<uint16_t>& from, int64_t B, int64_t H, int64_t T, int64_t D,
                                          int64_t width, int64_t col0) {
  std::vector<uint16_t> to(static_cast<size_t>(B * H * T * D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        std::memcpy(&to[((b * H + h) * T + t) * D], &from[(b * T + t) * width + col0 + h * D], D * 2);
  return to;
}

// bf16 bits from bytes and back.
inline std::vector<uint16_t> as_u16(const std::vector<uint8_t>& bytes) {
  std::vector<uint16_t> v(bytes.size() / 2);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}
inline std::vector<uint8_t> as_bytes(const std::vector<uint16_t>& v) {
  std::vector<uint8_t> bytes(v.size() * 2);
  std::memcpy(bytes.data(), v.data(), bytes.size());
  return bytes;
}

}  // namespace tessera::cuda
