// op_zoo (models.h): one graph that uses every op of the library at awkward
// sizes (1, odd, not multiples of any tile), each result a named f32 output,
// so that one target can be checked against another (test_aot_gpu runs its
// CUDA variant against its CPU variant). Inputs may be any values in
// [-1, 1] (integers: in [0, 5)): ops that need a domain (log, sqrt, pow)
// get one from abs() and offsets. It trains nothing and has no meaning.
// op_zoo(bf16 or f16) reads the same f32 inputs and params, casts the float
// ones to that type first and runs every op on it (quantized weights and
// their scales keep their own types).
#include "tessera/builder.h"
#include "tessera/models.h"
#include "tessera/ops.h"
#include "tessera/quant_ops.h"

namespace tessera {

namespace {

Tensor f32(Tensor t) { return t.dtype() == DType::f32 ? t : cast(t, DType::f32); }

NF4Tensors nf4_param(GraphBuilder& g, const std::string& name, int64_t out, int64_t in, bool nested) {
  const int64_t blocks = (out * in + kNF4BlockSize - 1) / kNF4BlockSize;
  NF4Tensors w;
  w.out_features = out;
  w.in_features = in;
  w.weight = g.param(name + ".weight", {(out * in + 1) / 2, 1}, DType::u8);
  w.absmax = g.param(name + ".absmax", {blocks}, nested ? DType::u8 : DType::f32);
  if (nested) {
    w.nested_absmax = g.param(name + ".nested_absmax", {(blocks + kNestedBlockSize - 1) / kNestedBlockSize});
    w.nested_quant_map = g.param(name + ".nested_quant_map", {256});
    w.nested_offset = g.param(name + ".nested_offset", {});
  }
  return w;
}

}  // namespace

Graph op_zoo(DType dtype) {
  if (!is_float(dtype) || dtype == DType::f64) fail("op_zoo: dtype ", dtype_name(dtype), " is not f32, f16 or bf16");
  GraphBuilder g(dtype == DType::f32 ? "op_zoo" : std::string("op_zoo_") + dtype_name(dtype));
  auto out = [&](const std::string& name, Tensor t) { g.output(name, f32(t)); };
  auto low = [&](Tensor t) { return t.dtype() == dtype ? t : cast(t, dtype); };
  auto input = [&](const std::string& name, Shape shape) { return low(g.input(name, std::move(shape))); };
  auto param = [&](const std::string& name, Shape shape) { return low(g.param(name, std::move(shape))); };
  Tensor a = input("a", {7, 13});
  Tensor b = input("b", {7, 13});
  Tensor row = input("row", {13});
  Tensor one = input("one", {1, 5});
  Tensor x3 = input("x3", {3, 5, 33});
  Tensor cols = input("cols", {3, 67, 29});  // 201 rows: long enough to split, no multiple of 8
  Tensor ids = g.input("ids", {3, 5}, DType::i32);

  // Elementwise, with broadcasting.
  out("neg", neg(a));
  out("abs", abs(a));
  out("exp", exp(a));
  out("log", log(abs(a) + 0.5));
  out("sqrt", sqrt(abs(a)));
  out("rsqrt", rsqrt(abs(a) + 0.25));
  out("tanh", tanh(a));
  out("sigmoid", sigmoid(a));
  out("relu", relu(a));
  out("silu", silu(a));
  out("gelu", gelu(a));
  out("gelu_tanh", gelu(a, "tanh"));
  out("add", a + row);
  out("sub", a - b);
  out("mul", a * row);
  out("div", a / (abs(b) + 0.5));
  out("pow", pow(abs(a) + 0.1, b));
  out("maximum", maximum(a, b));
  out("minimum", minimum(a, row));
  out("compare", f32(eq(a, a)) + f32(ne(a, b)) + f32(lt(a, b)) + f32(le(a, row)) + f32(gt(a, b)) + f32(ge(a, b)));
  out("where", where(gt(a, b), a, b * 2.0));
  out("cast_i32", cast(a * 4.0, DType::i32));
  out("cast_f16", cast(a, DType::f16));
  out("one", exp(one) * 2.0);
  out("wide", exp(input("wide", {131, 4133})) * 2.0);  // long rows, enough of them: GPU tiles along the rows

  // Reductions.
  out("sum_all", sum(x3));
  out("sum_rows", sum(x3, {2}));
  out("mean_mid", mean(x3, {1}, true));
  out("max_first", max(x3, {0}));
  out("sum_columns", sum(cols, {0, 1}));

  // Shapes.
  out("reshape", reshape(x3, {15, 33}) * 2.0);
  out("permute", permute(x3, {2, 0, 1}) + 1.0);
  out("transpose", transpose(a, 0, 1) * 3.0);
  out("broadcast_to", broadcast_to(row, {4, 13}) + 1.0);
  out("slice", slice(x3, 2, 1, 30, 3) - 1.0);
  out("concat", concat({a, b * 2.0}, 0));
  out("squeeze", squeeze(one, {0}) * 5.0);
  out("unsqueeze", unsqueeze(row, 1) * 5.0);

  // Products (cuBLASLt on CUDA) and the ops around them.
  Tensor w = param("w", {17, 33});
  Tensor bias = param("bias", {17});
  out("matmul", matmul(a, transpose(b, 0, 1)));
  out("matmul_batched", matmul(x3, transpose(x3, 1, 2)));
  out("linear", linear(x3, w, bias));
  out("linear_vector", linear(row, param("w_vec", {3, 13})));

  // Networks' ops.
  Tensor table = param("table", {5, 9});
  out("embedding", embedding(ids, table));
  out("embedding_grad", embedding_grad(ids, input("emb_grad", {3, 5, 9}), 5));
  out("softmax", softmax(x3, -1));
  out("softmax_mid", softmax(x3, 1));
  out("log_softmax", log_softmax(x3));
  out("logsumexp", logsumexp(x3));
  out("logsumexp_vector", logsumexp(row));
  Tensor ln_weight = param("ln.weight", {33});
  out("layer_norm", layer_norm(x3, ln_weight, param("ln.bias", {33})));
  out("rms_norm", rms_norm(x3, param("rms.weight", {33})));
  Tensor ln_grad = input("ln_grad", {3, 5, 33});
  out("layer_norm_grad", layer_norm_grad(x3, ln_grad, ln_weight));
  // A norm's gradient added to a residual, read as it is and as bf16: on
  // CUDA the add and the cast are one kernel that computes the norm's rows.
  Tensor ln_residual = x3 + layer_norm_grad(x3, ln_grad, Tensor());
  out("layer_norm_grad_residual", ln_residual);
  out("layer_norm_grad_residual_bf16", cast(ln_residual, DType::bf16));
  out("rms_norm_grad", rms_norm_grad(x3, input("rms_grad", {3, 5, 33}), Tensor()));
  out("cross_entropy", cross_entropy(reshape(x3, {15, 33}), reshape(ids, {15})));
  out("dropout", dropout(x3, 0.25, 1234, 77));
  out("gelu_grad", gelu_grad(a, b));
  Tensor q = input("q", {2, 3, 9, 8}), k = input("k", {2, 3, 9, 8}), v = input("v", {2, 3, 9, 5});
  out("attention_causal", attention(q, k, v, true));
  out("attention_full", attention(q, k, v, false, 0.3));

  // Rows and columns a multiple of the CUDA schedules' vector width (4
  // elements), but not of a warp's 128: vector loads with a ragged last
  // vector of lanes; one warp per row (8 rows to a block, the last block
  // short) and several warps per row (few, longer rows). The CUDA schedules
  // vectorize the row ops that write bf16 or one value per row: the norms
  // and the softmax in op_zoo(bf16), the logsumexp in both.
  Tensor xv = input("xv", {1061, 132}), rv = input("rv", {132}), xw = input("xw", {5, 260});
  Tensor vln_weight = param("vln.weight", {132});
  out("vec_pointwise", xv * rv + 1.0);
  out("vec_layer_norm", layer_norm(xv, vln_weight, param("vln.bias", {132})));
  Tensor vln_grad = input("vln_grad", {1061, 132});
  out("vec_layer_norm_grad", layer_norm_grad(xv, vln_grad, vln_weight));
  // The norm recomputed beside its gradient (as norm_vjp builds it): on
  // CUDA the residual's kernel writes it too, from the gradient's statistics.
  out("vec_layer_norm_plain", layer_norm(xv));
  Tensor vln_residual = xv + layer_norm_grad(xv, vln_grad, Tensor());
  out("vec_layer_norm_grad_residual", vln_residual);
  out("vec_layer_norm_grad_residual_bf16", cast(vln_residual, DType::bf16));
  out("vec_logsumexp", logsumexp(xv));
  out("vec_softmax_long", softmax(xw, -1));
  out("vec_sum_columns", sum(input("vcols", {3, 67, 36}), {0, 1}));

  // Weight-only quantization (f32 activations).
  Tensor xq = f32(x3);
  Tensor wi8 = g.param("w_int8", {17, 33}, DType::i8);
  Tensor si8 = g.param("w_int8.scale", {17});
  out("dequantize_int8", dequantize_int8(wi8, si8));
  out("linear_int8", linear_int8(xq, wi8, si8, f32(bias)));
  Tensor g17 = f32(input("g17", {3, 5, 17}));
  out("linear_int8_grad_input", linear_int8_grad_input(g17, wi8, si8));
  const NF4Tensors nf4 = nf4_param(g, "w_nf4", 17, 33, false);
  const NF4Tensors nested = nf4_param(g, "w_nf4_nested", 17, 33, true);
  out("dequantize_nf4", dequantize_nf4(nf4));
  out("linear_nf4", linear_nf4(xq, nf4, f32(bias)));
  out("linear_nf4_gemv", linear_nf4(reshape(slice(xq, 0, 0, 1, 1), {5, 33}), nested));
  out("linear_nf4_grad_input", linear_nf4_grad_input(f32(input("h17", {3, 5, 17})), nested));
  // The same with in_features a multiple of 64, which the CUDA quantized
  // linears take (library_quant_linear.h) from the packed weight: the GEMV
  // (1 and 3 rows), the tiled product (15 and 130 rows) and the input
  // gradient (15 and 130 rows; at 8 rows a Halide kernel), with and without
  // a bias, x an input or computed. Odd out_features; 131 x 128 NF4 has two
  // nested_absmax blocks. The int8 scales are the params / 127, as
  // quantization makes them (|W| <= 1): with |W| up to 127, two orders of a
  // sum of 128 products could differ near 0 by more than test_aot_gpu allows.
  Tensor xq64 = g.input("xq64", {3, 5, 64}), xq128 = g.input("xq128", {130, 128});
  Tensor row64 = reshape(slice(xq64, 1, 2, 3), {3, 64});
  Tensor one64 = reshape(slice(row64, 0, 0, 1), {64}), one128 = slice(xq128, 0, 0, 1);
  Tensor three128 = relu(slice(xq128, 0, 0, 3));
  Tensor gq33 = g.input("gq33", {130, 33}), gq131 = g.input("gq131", {130, 131});
  Tensor bias17 = g.param("qbias17", {17}), bias33 = g.param("qbias33", {33}), bias131 = g.param("qbias131", {131});
  Tensor w8_64 = g.param("w8_64", {17, 64}, DType::i8), s8_64 = g.param("w8_64.scale", {17}) * (1.0 / 127);
  Tensor w8_128 = g.param("w8_128", {33, 128}, DType::i8), s8_128 = g.param("w8_128.scale", {33}) * (1.0 / 127);
  out("linear_int8_1row", linear_int8(one64, w8_64, s8_64, bias17));
  out("linear_int8_3rows", linear_int8(row64, w8_64, s8_64));
  out("linear_int8_15rows", linear_int8(xq64, w8_64, s8_64, bias17));
  out("linear_int8_130rows", linear_int8(xq128, w8_128, s8_128));
  out("linear_int8_grad_input_15rows", linear_int8_grad_input(g17, w8_64, s8_64));
  out("linear_int8_grad_input_130rows", linear_int8_grad_input(gq33, w8_128, s8_128));
  const NF4Tensors nf4_64 = nf4_param(g, "nf4_64", 17, 64, false), nf4_128 = nf4_param(g, "nf4_128", 33, 128, false);
  out("linear_nf4_1row", linear_nf4(one128, nf4_128));
  out("linear_nf4_3rows", linear_nf4(row64, nf4_64, bias17));
  out("linear_nf4_15rows", linear_nf4(xq64, nf4_64));
  out("linear_nf4_130rows", linear_nf4(xq128, nf4_128, bias33));
  out("linear_nf4_grad_input_15rows", linear_nf4_grad_input(g17, nf4_64));
  out("linear_nf4_grad_input_130rows", linear_nf4_grad_input(gq33, nf4_128));
  const NF4Tensors nested_64 = nf4_param(g, "nf4_nested_64", 17, 64, true);
  const NF4Tensors nested_128 = nf4_param(g, "nf4_nested_128", 131, 128, true);
  out("linear_nf4_nested_1row", linear_nf4(one64, nested_64, bias17));
  out("linear_nf4_nested_3rows", linear_nf4(three128, nested_128));
  out("linear_nf4_nested_15rows", linear_nf4(xq64, nested_64, bias17));
  out("linear_nf4_nested_130rows", linear_nf4(xq128, nested_128, bias131));
  out("linear_nf4_nested_grad_input_8rows", linear_nf4_grad_input(slice(reshape(g17, {15, 17}), 0, 0, 8), nested_64));
  out("linear_nf4_nested_grad_input_130rows", linear_nf4_grad_input(gq131, nested_128));
  return g.build();
}

}  // namespace tessera
