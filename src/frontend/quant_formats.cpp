// The code books of the quantized formats (quant_ops.h): the NF4 values and
// bitsandbytes' signed 8-bit dynamic map. Data only; the ops that read them
// are in ops_quant.cpp, the quantizers in src/transforms/quantize_weights.cpp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tessera/quant_ops.h"

namespace tessera {

const std::array<float, 16>& nf4_code_book() {
  // The QLoRA paper's NormalFloat-4 (Dettmers et al. 2023, appendix E), as
  // bitsandbytes stores it in f32.
  static const std::array<float, 16> v = {
      -1.0f,
      -0.6961928009986877f,
      -0.5250730514526367f,
      -0.39491748809814453f,
      -0.28444138169288635f,
      -0.18477343022823334f,
      -0.09105003625154495f,
      0.0f,
      0.07958029955625534f,
      0.16093020141124725f,
      0.24611230194568634f,
      0.33791524171829224f,
      0.44070982933044434f,
      0.5626170039176941f,
      0.7229568362236023f,
      1.0f};
  return v;
}

namespace {

// torch.linspace(start, end, steps) in f32: the first half counts up from
// start, the second half down from end.
std::vector<float> linspace_f32(float start, float end, int steps) {
  std::vector<float> r(steps);
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int half = steps / 2;
  for (int i = 0; i < steps; ++i)
    r[i] = i < half ? start + step * static_cast<float>(i) : end - step * static_cast<float>(steps - 1 - i);
  return r;
}

}  // namespace

const std::array<float, 256>& dynamic_map_signed() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
  // exponent group i = 0..6, the 2^i midpoints of linspace(0.1, 1, 2^i + 1)
  // scaled by 10^(i-6), with both signs; then 0 and 1; sorted.
  static const std::array<float, 256> v = [] {
    std::vector<float> data;
    for (int i = 0; i < 7; ++i) {
      std::vector<float> b = linspace_f32(0.1f, 1.0f, (1 << i) + 1);
      const float scale = static_cast<float>(std::pow(10.0, i - 6));
      for (size_t j = 0; j + 1 < b.size(); ++j) {
        const float mean = (b[j] + b[j + 1]) / 2.0f;
        data.push_back(scale * mean);
        data.push_back(-scale * mean);
      }
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    std::sort(data.begin(), data.end());
    std::array<float, 256> a{};
    for (size_t i = 0; i < a.size() && i < data.size(); ++i) a[i] = data[i];
    return a;
  }();
  return v;
}

}  // namespace tessera
