// strided_view: the views it computes, checked element by element against the
// float64 reference. A base tensor holds each element's own linear index, so
// the reference's value of a view node at a multi-index is the buffer position
// the element comes from (read_view) or goes to (write_view).
#include <gtest/gtest.h>
#include <tessera/tessera.h>

#include <numeric>
#include <random>

#include "reference/reference.h"
#include "strided_view.h"
#include "test_util.h"

namespace tessera {
namespace {

ref::RefTensor iota(const Shape& shape, double first = 0) {
  ref::RefTensor t{shape, std::vector<double>(static_cast<size_t>(numel(shape))), DType::f32};
  std::iota(t.data.begin(), t.data.end(), first);
  return t;
}

// Row-major multi-index of linear index i.
std::vector<int64_t> unravel(int64_t i, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = i % shape[d];
    i /= shape[d];
  }
  return idx;
}

int64_t position(const StridedView& v, const std::vector<int64_t>& idx) {
  int64_t p = v.offset;
  for (size_t d = 0; d < idx.size(); ++d) p += idx[d] * v.strides[d];
  return p;
}

// Whether values[i] (row-major over `shape`) is an affine function of the
// multi-index: what a strided view of one buffer is, found by brute force.
bool affine(const std::vector<double>& values, const Shape& shape) {
  std::vector<double> step(shape.size(), 0);
  int64_t unit = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] > 1) step[d] = values[static_cast<size_t>(unit)] - values[0];
    unit *= shape[d];
  }
  for (size_t i = 0; i < values.size(); ++i) {
    const std::vector<int64_t> idx = unravel(static_cast<int64_t>(i), shape);
    double want = values[0];
    for (size_t d = 0; d < idx.size(); ++d) want += static_cast<double>(idx[d]) * step[d];
    if (values[i] != want) return false;
  }
  return true;
}

// Random chains of slices, permutes and reshapes over an iota input: every
// node's read_view exists exactly when its elements are an affine map of
// the input's buffer, and then gives each element's position.
TEST(StridedView, ReadViewsMatchTheReference) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  int views = 0, refused = 0;
  for (int trial = 0; trial < 200; ++trial) {
    GraphBuilder b("views");
    Shape shape;
    for (int64_t d = pick(2, 4); d > 0; --d) shape.push_back(pick(1, 6));
    Tensor x = b.input("x", shape, DType::f32);
    Tensor t = x;
    for (int step = 0; step < 4; ++step) {
      const int64_t rank = static_cast<int64_t>(t.type().rank());
      switch (pick(0, 2)) {
        case 0: {  // slice
          const int64_t axis = pick(0, rank - 1), size = t.type().shape[axis];
          const int64_t start = pick(0, size - 1);
          t = slice(t, axis, start, pick(start + 1, size), pick(1, 2));
          break;
        }
        case 1: {  // permute
          std::vector<int64_t> dims(rank);
          std::iota(dims.begin(), dims.end(), 0);
          std::shuffle(dims.begin(), dims.end(), rng);
          t = permute(t, dims);
          break;
        }
        default: {  // reshape: merge two neighbours, or split off a factor
          Shape s = t.type().shape;
          const int64_t d = pick(0, rank - 1);
          if (rank > 1 && d + 1 < rank && pick(0, 1)) {
            s[d] *= s[d + 1];
            s.erase(s.begin() + d + 1);
          } else if (s[d] % 2 == 0) {
            s[d] /= 2;
            s.insert(s.begin() + d, 2);
          } else {
            s.insert(s.begin() + d, 1);
          }
          t = reshape(t, s);
        }
      }
      b.output("v" + std::to_string(step), t);
    }
    const Graph g = b.build();
    const std::vector<ref::RefTensor> values = ref::evaluate_all(g, {{"x", iota(shape)}});
    const int input = g.find("x");
    std::vector<bool> viewed(g.nodes.size(), false);
    viewed[input] = true;
    for (const Node& n : g.nodes) {
      if (n.id == input) continue;
      SCOPED_TRACE("trial " + std::to_string(trial) + " node " + n.name + " (" + n.op + ") " + to_string(n.type.shape));
      const std::optional<StridedView> v = read_view(g, n.id, [&](int id) { return id == input; });
      viewed[n.id] = v.has_value();
      if (!viewed[n.inputs[0]]) {  // a chain through a refused reshape stays refused
        EXPECT_FALSE(v.has_value());
        continue;
      }
      const std::vector<double>& got = values[n.id].data;
      ASSERT_EQ(v.has_value(), affine(got, n.type.shape));
      if (!v) {
        ++refused;
        continue;
      }
      ++views;
      EXPECT_EQ(v->base, input);
      EXPECT_EQ(v->shape, n.type.shape);
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(position(*v, unravel(static_cast<int64_t>(i), n.type.shape)), static_cast<int64_t>(got[i]));
    }
  }
  EXPECT_GT(views, 300);  // the cases exercise both answers
  EXPECT_GT(refused, 0);
}

// Reshapes that merge dims not contiguous in memory are no views.
TEST(StridedView, ReshapesOfTransposesAndStepsAreRefused) {
  GraphBuilder b("refused");
  Tensor x = b.input("x", {4, 6}, DType::f32);
  Tensor t = reshape(permute(x, {1, 0}), {24}), s = reshape(slice(x, 1, 0, 4), {16});
  Tensor ok = reshape(slice(x, 0, 1, 3), {12});  // rows 1 and 2: contiguous
  Tensor even = reshape(slice(x, 1, 0, 6, 2), {12});  // every other element: stride 2
  b.output("t", t);
  b.output("even", even);
  b.output("s", s);
  b.output("ok", ok);
  const Graph g = b.build();
  const int input = g.find("x");
  auto view = [&](const Tensor& v) { return read_view(g, g.find(v.name()), [&](int id) { return id == input; }); };
  EXPECT_FALSE(view(t).has_value());
  EXPECT_FALSE(view(s).has_value());
  ASSERT_TRUE(view(ok).has_value());
  EXPECT_EQ(view(ok)->offset, 6);
  EXPECT_EQ(view(ok)->strides, std::vector<int64_t>{1});
  ASSERT_TRUE(view(even).has_value());
  EXPECT_EQ(view(even)->strides, std::vector<int64_t>{2});
}

// GPT's attention gradients: [B, H, T, D] permuted to [B, T, H, D], merged
// to [B, T, H x D] and concatenated into the q, k, v projection's gradient.
TEST(StridedView, WriteViewsPlaceEachPieceOfAConcat) {
  const int64_t B = 2, H = 3, T = 5, D = 4;
  GraphBuilder b("concat");
  std::vector<Tensor> grads, pieces;
  for (const char* name : {"dq", "dk", "dv"}) {
    grads.push_back(b.input(name, {B, H, T, D}, DType::f32));
    pieces.push_back(reshape(permute(grads.back(), {0, 2, 1, 3}), {B, T, H * D}));
  }
  Tensor c = concat(pieces, 2);
  b.output("c", c);
  b.output("dk_too", permute(grads[1], {0, 2, 1, 3}));  // dk's permute has a second reader
  const Graph g = b.build();
  const int64_t n = B * H * T * D;
  const std::vector<ref::RefTensor> values =
      ref::evaluate_all(g, {{"dq", iota({B, H, T, D}, 0)}, {"dk", iota({B, H, T, D}, n)}, {"dv", iota({B, H, T, D}, 2 * n)}});
  const std::vector<int> readers = g.use_counts();
  const int target = g.find(c.name());
  for (int w : {0, 2}) {
    const int id = g.find(w == 0 ? "dq" : "dv");
    const std::optional<StridedView> v = write_view(g, id, target, readers);
    ASSERT_TRUE(v.has_value()) << w;
    EXPECT_EQ(v->base, target);
    EXPECT_EQ(v->offset, w * H * D);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(values[target].data[static_cast<size_t>(position(*v, unravel(i, {B, H, T, D})))], static_cast<double>(w * n + i));
  }
  EXPECT_FALSE(write_view(g, g.find("dk"), target, readers).has_value());
  // A node is its own target: dense.
  const std::optional<StridedView> self = write_view(g, target, target, readers);
  ASSERT_TRUE(self.has_value());
  EXPECT_TRUE(self->is_dense());
}

}  // namespace
}  // namespace tessera
