// init_params (models.h): fills param Buffers from a name -> ParamInit map
// with a small self-contained generator (SplitMix64 and Box-Muller), so that
// values are the same on every platform and standard library; trainer_init
// translates the map for the Trainer. It does not decide how a model is
// initialized (mlp_init, gpt_init do).
#include <cmath>
#include <cstdint>

#include "tessera/error.h"
#include "tessera/models.h"

namespace tessera {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001B3ull;
  return h;
}

// Uniform in (0, 1): 53 random bits, never 0 (Box-Muller takes a log).
double uniform01(uint64_t& state) { return (static_cast<double>(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53; }

}  // namespace

std::map<std::string, Buffer> init_params(const Graph& g, const InitMap& init, uint64_t seed) {
  std::map<std::string, Buffer> out;
  for (int id : g.params()) {
    const Node& p = g.node(id);
    auto it = init.find(p.name);
    if (it == init.end()) {
      if (is_float(p.type.dtype)) fail("init_params: param '", p.name, "' has no entry in the init map");
      out[p.name] = Buffer(p.type.dtype, p.type.shape);  // integer state: zeros
      continue;
    }
    const ParamInit& pi = it->second;
    Buffer b(p.type.dtype, p.type.shape);
    uint64_t state = seed ^ fnv1a(p.name);
    const int64_t n = b.numel();
    switch (pi.kind) {
      case ParamInit::zeros:
        break;
      case ParamInit::ones:
        for (int64_t i = 0; i < n; ++i) b.set(i, 1.0);
        break;
      case ParamInit::uniform:
        for (int64_t i = 0; i < n; ++i) b.set(i, pi.a + (pi.b - pi.a) * uniform01(state));
        break;
      case ParamInit::normal:
        for (int64_t i = 0; i < n; i += 2) {
          const double r = std::sqrt(-2.0 * std::log(uniform01(state)));
          const double t = 2.0 * M_PI * uniform01(state);
          b.set(i, pi.a + pi.b * r * std::cos(t));
          if (i + 1 < n) b.set(i + 1, pi.a + pi.b * r * std::sin(t));
        }
        break;
      default:
        fail("init_params: param '", p.name, "' has an unknown init kind ", static_cast<int>(pi.kind));
    }
    out[p.name] = b;
  }
  return out;
}

std::map<std::string, Init> trainer_init(const InitMap& init) {
  std::map<std::string, Init> out;
  for (const auto& [name, pi] : init) {
    switch (pi.kind) {
      case ParamInit::zeros: out[name] = Init::zeros(); break;
      case ParamInit::ones: out[name] = Init::ones(); break;
      case ParamInit::uniform: out[name] = Init::uniform(pi.a, pi.b); break;
      case ParamInit::normal: out[name] = Init::normal(pi.a, pi.b); break;
      default: fail("trainer_init: param '", name, "' has an unknown init kind ", static_cast<int>(pi.kind));
    }
  }
  return out;
}

}  // namespace tessera
