// Overriding one kernel's schedule by name (include/tessera/schedule.h):
// the kernel's generated code changes (its lowered statement), its results
// do not (against the default schedule and the float64 reference), other
// kernels keep the default, and bad overrides give clear errors.
#include <gtest/gtest.h>
#include <tessera/schedule.h>
#include <tessera/tessera.h>

#include <cmath>
#include <random>
#include <regex>

#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

Graph two_layers() {
  GraphBuilder g("two");
  Tensor x = g.input("x", {37, 53});
  Tensor h = relu(linear(x, g.param("w1", {61, 53}), g.param("b1", {61})));
  g.output("y", sum(linear(h, g.param("w2", {5, 61})), {1}));
  return g.build();
}

// The statement with Halide's numbered temporaries (t123) renamed, so that
// two compilations of one schedule compare equal.
std::string normalized(const std::string& stmt) { return std::regex_replace(stmt, std::regex("\\bt[0-9]+\\b"), "t#"); }

// A plain schedule: every output and stage at root, nothing vectorized or parallel.
std::string naive(KernelSchedule& k) {
  for (auto& stages : k.stages)
    for (Halide::Func s : stages) s.compute_root();
  for (Halide::Func out : k.outputs) out.compute_root();
  return "naive: every stage at root, scalar, one thread";
}

TEST(ScheduleOverride, ChangesTheCodeNotTheResults) {
  Graph g = two_layers();
  const std::string first = "t0";  // the first linear
  CompileOptions options;
  int calls = 0;
  options.schedules[first] = [&](KernelSchedule& k) {
    ++calls;
    EXPECT_EQ(k.outputs.size(), 1u);
    return naive(k);
  };
  Executable custom = compile(g, Target::host(), options);
  Executable plain = compile(g);
  EXPECT_EQ(calls, 1);
  EXPECT_NE(custom.schedule_text().find("(override) naive"), std::string::npos) << custom.schedule_text();
  EXPECT_EQ(plain.schedule_text().find("override"), std::string::npos);

  const std::string custom_stmt = kernel_stmt(custom, first), plain_stmt = kernel_stmt(plain, first);
  EXPECT_NE(custom_stmt, plain_stmt);
  EXPECT_NE(plain_stmt.find("parallel"), std::string::npos) << plain_stmt;
  EXPECT_EQ(custom_stmt.find("parallel"), std::string::npos) << custom_stmt;
  EXPECT_EQ(custom_stmt.find("x16"), std::string::npos) << custom_stmt;  // no 16-lane vectors
  // The other kernels keep the default schedule: the same code.
  const std::string last = g.node(g.outputs[0].node).name;
  EXPECT_EQ(normalized(kernel_stmt(custom, last)), normalized(kernel_stmt(plain, last)));

  SEEDED(seed);
  auto args = test_util::random_args(g, seed);
  auto a = custom.run(args), b = plain.run(args);
  auto want = ref::evaluate(g, ref::from_buffers(args));
  std::vector<double> ya = a.at("y").to_f64(), yb = b.at("y").to_f64();
  for (size_t i = 0; i < ya.size(); ++i) {
    EXPECT_NEAR(ya[i], yb[i], 1e-4 * (1 + std::fabs(yb[i]))) << i;
    EXPECT_NEAR(ya[i], want.at("y").data[i], 1e-4 * (1 + std::fabs(want.at("y").data[i]))) << i;
  }
}

TEST(ScheduleOverride, Errors) {
  Graph g = two_layers();
  CompileOptions options;
  options.schedules["t99"] = naive;
  try {
    compile(g, Target::host(), options);
    ADD_FAILURE() << "an override of no kernel was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'t99', which is no kernel of graph 'two'"), std::string::npos) << e.what();
  }
  CompileOptions bad;
  bad.schedules["t0"] = [](KernelSchedule& k) {
    k.outputs[0].vectorize(Halide::Var("no_such_var"), 8);  // Halide refuses this
    return std::string("bad");
  };
  try {
    compile(g, Target::host(), bad);
    ADD_FAILURE() << "a bad override was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("schedule override"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernel_stmt(compile(g), "t42"), Error);
}

}  // namespace
