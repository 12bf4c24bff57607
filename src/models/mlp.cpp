// The MLP classifier (models.h): its forward graph and its PyTorch-default
// param initialization. Built only from the public frontend; it trains
// nothing.
#include <cmath>

#include "tessera/builder.h"
#include "tessera/error.h"
#include "tessera/models.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

void check(const MlpConfig& c) {
  if (c.sizes.size() < 2) fail("mlp: sizes needs at least an input and an output size, got ", to_string(c.sizes));
  for (int64_t s : c.sizes)
    if (s < 1) fail("mlp: every size must be >= 1, got ", to_string(c.sizes));
  if (c.batch < 1) fail("mlp: batch must be >= 1, got ", c.batch);
  if (c.activation != "relu" && c.activation != "gelu")
    fail("mlp: activation must be \"relu\" or \"gelu\", got \"", c.activation, "\"");
}

std::string layer(size_t i, const char* what) { return "layers." + std::to_string(i) + "." + what; }

}  // namespace

Graph mlp(const MlpConfig& c) {
  check(c);
  GraphBuilder g("mlp");
  Tensor h = g.input("x", {c.batch, c.sizes[0]});
  Tensor y = g.input("y", {c.batch}, DType::i32);
  const size_t n = c.sizes.size() - 1;
  for (size_t i = 0; i < n; ++i) {
    Tensor w = g.param(layer(i, "weight"), {c.sizes[i + 1], c.sizes[i]});
    Tensor b = g.param(layer(i, "bias"), {c.sizes[i + 1]});
    h = linear(h, w, b);
    if (i + 1 < n) h = c.activation == "relu" ? relu(h) : gelu(h);
  }
  g.output("logits", h);
  g.output("loss", cross_entropy(h, y));
  return g.build();
}

InitMap mlp_init(const MlpConfig& c) {
  check(c);
  InitMap m;
  for (size_t i = 0; i + 1 < c.sizes.size(); ++i) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(c.sizes[i]));
    m[layer(i, "weight")] = {ParamInit::uniform, -bound, bound};
    m[layer(i, "bias")] = {ParamInit::uniform, -bound, bound};
  }
  return m;
}

}  // namespace tessera
