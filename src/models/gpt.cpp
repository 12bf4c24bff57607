// The GPT model (models.h): the GPT-2 forward graph with nanoGPT's options
// (bias, dropout, weight tying) and GPT-2's param initialization. Built only
// from the public frontend; it trains and samples nothing.
#include <cmath>

#include "tessera/builder.h"
#include "tessera/error.h"
#include "tessera/models.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

void check(const GptConfig& c) {
  if (c.vocab_size < 1 || c.block_size < 1 || c.n_layer < 1 || c.n_head < 1 || c.n_embd < 1 || c.batch < 1)
    fail("gpt: vocab_size, block_size, n_layer, n_head, n_embd and batch must be >= 1");
  if (c.n_embd % c.n_head != 0) fail("gpt: n_embd (", c.n_embd, ") must be a multiple of n_head (", c.n_head, ")");
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) fail("gpt: dropout must be in [0, 1), got ", c.dropout);
}

std::string block(int64_t i, const std::string& rest) { return "transformer.h." + std::to_string(i) + "." + rest; }

struct Builder {
  const GptConfig& c;
  GraphBuilder g{"gpt"};
  uint64_t dropout_offset = 0;  // distinct Philox counters for every dropout node

  Tensor linear_layer(Tensor x, const std::string& prefix, int64_t out, int64_t in) {
    Tensor w = g.param(prefix + ".weight", {out, in});
    if (!c.bias) return linear(x, w);
    return linear(x, w, g.param(prefix + ".bias", {out}));
  }

  Tensor norm(Tensor x, const std::string& prefix) {
    Tensor w = g.param(prefix + ".weight", {c.n_embd});
    if (c.bias) return layer_norm(x, w, g.param(prefix + ".bias", {c.n_embd}), c.layer_norm_eps);
    return layer_norm(x, c.layer_norm_eps) * w;
  }

  Tensor drop(Tensor x) {
    if (c.dropout == 0.0) return x;
    Tensor y = dropout(x, c.dropout, c.dropout_seed, dropout_offset);
    dropout_offset += static_cast<uint64_t>(x.type().numel());
    return y;
  }

  // [B, T, C] -> [B, H, T, D]
  Tensor heads(Tensor x) {
    return permute(reshape(x, {c.batch, c.block_size, c.n_head, c.n_embd / c.n_head}), {0, 2, 1, 3});
  }

  Tensor attn(Tensor x, int64_t i) {
    const int64_t C = c.n_embd;
    Tensor qkv = linear_layer(x, block(i, "attn.c_attn"), 3 * C, C);  // [B, T, 3C]
    Tensor q = heads(slice(qkv, 2, 0, C));
    Tensor k = heads(slice(qkv, 2, C, 2 * C));
    Tensor v = heads(slice(qkv, 2, 2 * C, 3 * C));
    Tensor y = attention(q, k, v, /*causal=*/true);                            // [B, H, T, D]
    y = reshape(permute(y, {0, 2, 1, 3}), {c.batch, c.block_size, C});  // [B, T, C]
    return drop(linear_layer(y, block(i, "attn.c_proj"), C, C));
  }

  Tensor mlp(Tensor x, int64_t i) {
    const int64_t C = c.n_embd;
    Tensor h = gelu(linear_layer(x, block(i, "mlp.c_fc"), 4 * C, C), "tanh");
    return drop(linear_layer(h, block(i, "mlp.c_proj"), C, 4 * C));
  }

  Graph build() {
    const int64_t B = c.batch, T = c.block_size, C = c.n_embd, V = c.vocab_size;
    Tensor idx = g.input("idx", {B, T}, DType::i32);
    Tensor targets = g.input("targets", {B, T}, DType::i32);
    Tensor wte = g.param("transformer.wte.weight", {V, C});
    Tensor wpe = g.param("transformer.wpe.weight", {T, C});
    Tensor x = drop(embedding(idx, wte) + wpe);  // [B, T, C] + [T, C]
    for (int64_t i = 0; i < c.n_layer; ++i) {
      x = x + attn(norm(x, block(i, "ln_1")), i);
      x = x + mlp(norm(x, block(i, "ln_2")), i);
    }
    x = norm(x, "transformer.ln_f");
    Tensor head = c.tie_weights ? wte : g.param("lm_head.weight", {V, C});
    Tensor logits = linear(x, head);  // [B, T, V]
    g.output("logits", logits);
    g.output("loss", cross_entropy(reshape(logits, {B * T, V}), reshape(targets, {B * T})));
    return g.build();
  }
};

}  // namespace

Graph gpt(const GptConfig& config) {
  check(config);
  return Builder{config}.build();
}

InitMap gpt_init(const GptConfig& c) {
  check(c);
  const ParamInit weight{ParamInit::normal, 0.0, 0.02};
  const ParamInit proj{ParamInit::normal, 0.0, 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer))};
  const ParamInit zeros{ParamInit::zeros, 0, 0}, ones{ParamInit::ones, 0, 0};
  InitMap m;
  m["transformer.wte.weight"] = weight;
  m["transformer.wpe.weight"] = weight;
  auto norm = [&](const std::string& prefix) {
    m[prefix + ".weight"] = ones;
    if (c.bias) m[prefix + ".bias"] = zeros;
  };
  auto linear = [&](const std::string& prefix, const ParamInit& w) {
    m[prefix + ".weight"] = w;
    if (c.bias) m[prefix + ".bias"] = zeros;
  };
  for (int64_t i = 0; i < c.n_layer; ++i) {
    norm(block(i, "ln_1"));
    linear(block(i, "attn.c_attn"), weight);
    linear(block(i, "attn.c_proj"), proj);
    norm(block(i, "ln_2"));
    linear(block(i, "mlp.c_fc"), weight);
    linear(block(i, "mlp.c_proj"), proj);
  }
  norm("transformer.ln_f");
  if (!c.tie_weights) m["lm_head.weight"] = weight;
  return m;
}

}  // namespace tessera
