// bf16 kept as uint16 with integer conversions (src/schedules/bf16_storage.h),
// the path every CUDA kernel takes, checked on the CPU where Halide's own
// bf16 code is the baseline:
//  - conversions of special values (ties to even, the rounding into inf,
//    NaN, inf, zeros, subnormals) equal the float64 reference's rounding
//    and Halide's native conversion, bit for bit;
//  - every op of op_zoo(bf16) and every output of a bf16-autocast GPT
//    training step are bitwise equal with and without the pass, on fresh
//    random inputs;
//  - the pass really runs: the kernels' lowered code loads uint16, not bfloat16.
#include <gtest/gtest.h>
#include <tessera/autocast.h>
#include <tessera/models.h>
#include <tessera/schedule.h>
#include <tessera/tessera.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "reference/reference.h"
#include "test_util.h"

namespace tessera {
namespace {

CompileOptions u16_storage() {
  CompileOptions o;
  o.bf16_as_u16 = true;
  return o;
}
const CompileOptions kU16 = u16_storage();

// Every output of the two runs has the same bytes; reports the first differing element of each.
void expect_bitwise_equal(const std::map<std::string, Buffer>& native, const std::map<std::string, Buffer>& u16) {
  ASSERT_EQ(native.size(), u16.size());
  for (const auto& [name, a] : native) {
    const Buffer& b = u16.at(name);
    ASSERT_EQ(a.type(), b.type()) << name;
    if (std::memcmp(a.data(), b.data(), a.bytes()) == 0) continue;
    const std::vector<double> x = a.to_f64(), y = b.to_f64();
    size_t i = 0;
    while (i < x.size() && (x[i] == y[i] || (std::isnan(x[i]) && std::isnan(y[i])))) ++i;
    if (i < x.size())
      ADD_FAILURE() << "output " << name << "[" << i << "]: native bf16 " << x[i] << ", uint16 storage " << y[i];
    else
      ADD_FAILURE() << "output " << name << ": the bytes differ (NaN payloads or signs of zero)";
  }
}

uint16_t bits_of_bf16(const Buffer& b, int64_t i) { return b.data_as<uint16_t>()[i]; }

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Bf16Storage, ConversionsOfSpecialValues) {
  std::vector<double> v;
  for (uint32_t u : {0x3f808000u,   // 1 + 2^-8: a tie, rounds to even (down)
                     0x3f818000u,   // 1 + 3 * 2^-8: a tie, rounds to even (up)
                     0x3f808001u,   // just above a tie: up
                     0x3f807fffu,   // just below: down
                     0x7f7fffffu,   // the largest f32: rounds to inf
                     0x7f7f7fffu,   // rounds to the largest bf16
                     0x00000001u,   // the smallest subnormal
                     0x00018000u,   // a subnormal tie
                     0x80000000u,   // -0
                     0x7f800000u,   // inf
                     0xff800000u})  // -inf
    v.push_back(from_bits(u));
  const size_t finite = v.size();
  v.push_back(std::nan(""));
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-30, 30);
  for (int i = 0; i < 1000; ++i) v.push_back(std::ldexp(u(rng), static_cast<int>(rng() % 60) - 30));
  const int64_t n = static_cast<int64_t>(v.size());

  GraphBuilder g("bf16_casts");
  Tensor x = g.input("x", {n});
  Tensor h = cast(x, DType::bf16);
  g.output("to_bf16", h);
  g.output("back_to_f32", cast(h, DType::f32));
  g.output("bf16_math", h * h - h);  // f32 math, rounded once
  const Graph graph = g.build();
  const std::map<std::string, Buffer> args{{"x", Buffer::from(v, {n}, DType::f32)}};
  const auto native = compile(graph).run(args);
  const auto u16 = compile(graph, Target::host(), kU16).run(args);
  expect_bitwise_equal(native, u16);
  const Buffer& got = u16.at("to_bf16");
  for (int64_t i = 0; i < n; ++i) {
    if (i == static_cast<int64_t>(finite)) {
      EXPECT_TRUE(std::isnan(got.get(i))) << "NaN became " << got.get(i);
      continue;
    }
    const double want = ref::to_dtype(DType::bf16, static_cast<float>(v[i]));
    EXPECT_TRUE(got.get(i) == want && std::signbit(got.get(i)) == std::signbit(want))
        << "element " << i << " (" << v[i] << "): bits " << std::hex << bits_of_bf16(got, i) << ", reference "
        << want;
  }
  EXPECT_EQ(bits_of_bf16(got, 0), 0x3f80);
  EXPECT_EQ(bits_of_bf16(got, 1), 0x3f82);
  EXPECT_EQ(bits_of_bf16(got, 4), 0x7f80);
}

TEST(Bf16Storage, EveryOpBitwiseEqualsNative) {
  SEEDED(seed);
  const Graph graph = op_zoo(DType::bf16);
  const auto args = test_util::random_args(graph, seed);
  expect_bitwise_equal(compile(graph).run(args), compile(graph, Target::host(), kU16).run(args));
}

TEST(Bf16Storage, GptAutocastStepBitwiseEqualsNative) {
  SEEDED(seed);
  const Graph graph = registered_model(
      "gpt_train_step",
      {{"vocab_size", "13"}, {"block_size", "7"}, {"n_layer", "1"}, {"n_head", "2"}, {"n_embd", "10"}, {"batch", "3"},
       {"autocast", "bf16"}});
  bool has_bf16 = false;
  for (const Node& n : graph.nodes) has_bf16 |= n.type.dtype == DType::bf16;
  ASSERT_TRUE(has_bf16);
  const auto args = test_util::random_args(graph, seed);
  const Executable u16 = compile(graph, Target::host(), kU16);
  expect_bitwise_equal(compile(graph).run(args), u16.run(args));

  // The pass ran: a kernel reading bf16 loads uint16 (the stmt names the load's type).
  const Executable native = compile(graph);
  int checked = 0;
  for (const Node& n : graph.nodes) {
    if (n.op != "linear" || n.type.dtype != DType::bf16) continue;
    std::string with, without;
    try {
      with = kernel_stmt(u16, n.name);
      without = kernel_stmt(native, n.name);
    } catch (const Error&) {
      continue;  // fused into another kernel
    }
    EXPECT_EQ(with.find("(bfloat16)"), std::string::npos) << with;
    EXPECT_NE(without.find("bfloat16"), std::string::npos) << without;
    EXPECT_NE(with.find("uint16"), std::string::npos) << with;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

}  // namespace
}  // namespace tessera
