// Weight-only quantization of a graph's linear layers, and of its weights.
//
// quantize(options) is a Graph -> Graph pass: each selected `linear` node
// whose weight is a param "<m>.weight" (f32 or bf16, [N, K]) and whose x is
// f32 becomes linear_int8 or linear_nf4 (quant_ops.h) reading new params
// under the names quant_ops.h lists ("<m>.weight" becomes the packed u8/i8
// weight; "<m>.weight.scale" or "<m>.weight.absmax" and, with double
// quantization, "<m>.weight.nested_absmax", ".nested_quant_map",
// ".nested_offset" are added as f32/u8 params). The bias, if any, stays
// "<m>.bias" (f32). The new params are frozen: autodiff gives them no
// gradient. quantize_state_dict() turns a state dict of the original graph
// into one for the quantized graph by quantizing the selected weights.
//
// Module selection: `modules` is a list of glob patterns matched against the
// whole module name "<m>" (the weight's param name without ".weight"): '*'
// matches any run of characters (dots included), '?' any one character,
// everything else itself. A module is selected when some pattern matches it;
// a selected module whose weight cannot be quantized (read by anything but
// linear nodes as their weight, not f32/bf16, x not f32) is an Error. With
// no patterns (the default), every linear that can be quantized is, except
// the LM head (module "lm_head" or "<...>.lm_head"); others are skipped.
// This header does not load files or fine-tune (LoRA is a separate pass).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"

namespace tessera {

enum class QuantFormat { int8, nf4 };

struct QuantizeOptions {
  QuantFormat format = QuantFormat::nf4;
  bool double_quant = false;         // NF4 only: quantize the absmax values too
  std::vector<std::string> modules;  // glob patterns (above); empty: every linear but the LM head
};

// The modules ("<m>") `options` selects in `g`, in graph order.
std::vector<std::string> quantized_modules(const Graph& g, const QuantizeOptions& options = {});
Graph quantize_graph(const Graph& g, const QuantizeOptions& options = {});
Pass quantize(QuantizeOptions options = {});

// `state` holds the params of `original` by name; returns the params of
// quantize_graph(original, options): every selected "<m>.weight" quantized
// into its new params (the state's weight may be f32 or bf16, whatever the
// graph's dtype), everything else shared unchanged. Error naming the param
// if a selected weight is missing or has the wrong shape or dtype.
std::map<std::string, Buffer> quantize_state_dict(const Graph& original, const std::map<std::string, Buffer>& state,
                                                  const QuantizeOptions& options = {});

// ---- Quantizing one weight [N, K] (f32 or bf16) ------------------------------------

// scale[n] = max_k |W[n, k]| / 127, weight = round-half-even(W / scale)
// clamped to [-127, 127] (0 where the row is all zero).
struct Int8Weight {
  Buffer weight;  // i8[N, K]
  Buffer scale;   // f32[N]
};
Int8Weight quantize_int8(const Buffer& weight);

// Blocks of 64 of the flattened weight; absmax = the block's max |W|; each
// element's code is the nearest NF4 value to W / absmax (ties to the lower
// code; 0's code where absmax is 0). With double_quant, offset = the mean of
// the absmax values and each absmax - offset is coded as the nearest
// dynamic-map value to it / its 256-block's max |absmax - offset|.
struct NF4Weight {
  Buffer weight;            // u8[ceil(N*K/2), 1]
  Buffer absmax;            // f32[nblocks], or u8[nblocks] with double_quant
  Buffer nested_absmax;     // f32[ceil(nblocks/256)]  (double_quant only)
  Buffer nested_quant_map;  // f32[256]                (double_quant only)
  Buffer nested_offset;     // f32[]                   (double_quant only)
};
NF4Weight quantize_nf4(const Buffer& weight, bool double_quant = false);

}  // namespace tessera
