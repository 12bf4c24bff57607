// Small helpers shared by test files: fresh random seeds that a failure
// prints (SEEDED), random arguments for a graph (training steps included),
// output comparison with the float64 reference, and the message of an
// expected Error. Header-only; nothing here is under test.
#pragma once

#include <gtest/gtest.h>
#include <tessera/tessera.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "reference/reference.h"

namespace tessera::test_util {

// A fresh random seed for each run; TESSERA_TEST_SEED=N replays run N.
inline uint32_t fresh_seed() {
  if (const char* s = std::getenv("TESSERA_TEST_SEED")) return static_cast<uint32_t>(std::strtoul(s, nullptr, 0));
  return std::random_device{}();
}

// Every input and param of `g`: floats U(-1, 1), integers in [0, 5);
// a training step's "optim.step" is 3 and its second moments are
// non-negative (squares), as AdamW needs.
inline std::map<std::string, Buffer> random_args(const Graph& g, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::map<std::string, Buffer> args;
  for (const Node& n : g.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(numel(n.type.shape));
    for (double& x : v) x = is_float(n.type.dtype) ? u(rng) : static_cast<double>(rng() % 5);
    if (n.name == "optim.step") v.assign(v.size(), 3);
    if (n.name.find("exp_avg_sq") != std::string::npos)
      for (double& x : v) x = x * x;
    args[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
  }
  return args;
}

// Every output in `want` agrees with `got` within tol * (1 + |want|); reports
// up to three mismatches per output, prefixed with `what`.
inline void expect_outputs_close(const std::map<std::string, Buffer>& got,
                                 const std::map<std::string, ref::RefTensor>& want, double tol,
                                 const std::string& what) {
  for (const auto& [name, w] : want) {
    std::vector<double> a = got.at(name).to_f64();
    int bad = 0;
    for (size_t i = 0; i < a.size(); ++i)
      if (!(std::fabs(a[i] - w.data[i]) <= tol * (1 + std::fabs(w.data[i]))) && bad++ < 3)
        ADD_FAILURE() << what << ": output " << name << "[" << i << "]: got " << a[i] << ", expected " << w.data[i];
  }
}

// The message of the Error that `f` throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

inline bool has_output(const Graph& g, const std::string& name) {
  for (const GraphOutput& o : g.outputs)
    if (o.name == name) return true;
  return false;
}

}  // namespace tessera::test_util

// Declares `var`, a fresh seed (test_util::fresh_seed), and traces it so
// that a failure prints how to replay it.
#define SEEDED(var)                                      \
  const uint32_t var = ::tessera::test_util::fresh_seed(); \
  SCOPED_TRACE("seed " + std::to_string(var) + " (rerun with TESSERA_TEST_SEED=" + std::to_string(var) + ")")
