// The float64 reference interpreter: evaluates a tessera Graph node by node
// in plain C++/Eigen, in double precision, for the tests to compare against.
//
// It is written from the op specification (include/tessera/ops.h) and shares
// no code with the op definitions or the Halide lowering: every op is
// re-implemented here from its name and attributes, its output type is
// inferred independently and checked against the graph's. Values are held as
// doubles; each node's result is rounded to its dtype (f32 with (float),
// f16/bf16 round-to-nearest-even, integers truncated toward zero and wrapped
// to the width, bool = x != 0), so integer results are exact (for |x| < 2^53).
// `define` nodes are interpreted by walking their Halide Expr (Halide's own
// integer division semantics: floor division, Euclidean mod), and
// `define_grad` nodes by a reverse-mode walk over the same Expr written here,
// independent of Halide's propagate_adjoints. It is slow and
// is meant for test-sized tensors only; it does not schedule, compile or fuse.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/graph.h"

namespace tessera {
class Buffer;
}

namespace tessera::ref {

// A dense row-major tensor of doubles. `dtype` says which type the values
// are meant to be representable in (set by the interpreter; informational
// for callers, and what to_buffer converts to by default).
struct RefTensor {
  Shape shape;
  std::vector<double> data;  // row-major, numel(shape) values
  DType dtype = DType::f64;

  int64_t numel() const { return tessera::numel(shape); }
};

// Evaluates every graph output. `args` holds every input and param by name
// (shapes must match the graph; values are rounded to the node's dtype).
// Throws tessera::Error on a missing or mis-shaped argument, an unknown op,
// bad attributes, or a node whose stored type disagrees with the type the
// reference infers for it.
std::map<std::string, RefTensor> evaluate(const Graph& g, const std::map<std::string, RefTensor>& args);
// The value of every node, by node id (for debugging and for intermediate checks).
std::vector<RefTensor> evaluate_all(const Graph& g, const std::map<std::string, RefTensor>& args);

// Conversions from and to runtime Buffers (reference_buffer.cpp).
RefTensor from_buffer(const Buffer& b);
Buffer to_buffer(const RefTensor& t);               // in t.dtype
Buffer to_buffer(const RefTensor& t, DType dtype);  // values converted to `dtype`
std::map<std::string, RefTensor> from_buffers(const std::map<std::string, Buffer>& args);

// Rounds / converts a double to what `dtype` can hold: f32 via (float),
// f16/bf16 by round-to-nearest-even (overflow to +-inf), integers truncate
// toward zero then wrap to the width (NaN -> 0), bool is x != 0.
double to_dtype(DType dtype, double x);
// Wraps an integer to the width and signedness of an integer dtype.
int64_t wrap_int(DType dtype, int64_t x);
// Round-to-nearest-even to a binary float with `mant_bits` stored mantissa
// bits and minimum normal exponent `emin` (subnormals kept), saturating to
// +-inf above `max_finite`.
double round_float(double x, int mant_bits, int emin, double max_finite);

// Philox4x32-10 (Salmon et al., Random123): 10 rounds, the key bumped
// between rounds by the Weyl constants.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

}  // namespace tessera::ref
