// The registry of passes by name (pass_registry.h): one table row per pass,
// with its argument parser. This file holds no transform of its own; each
// row calls the pass's public constructor.
#include "tessera/pass_registry.h"

#include <cstdlib>
#include <functional>
#include <sstream>

#include "tessera/autocast.h"
#include "tessera/autodiff.h"
#include "tessera/error.h"
#include "tessera/lora.h"
#include "tessera/optimizer.h"
#include "tessera/quantize.h"
#include "tessera/remat.h"

namespace tessera {

namespace {

struct Entry {
  PassInfo info;
  std::function<Pass(const std::string& arg, bool has_arg)> make;
};

double number_arg(const std::string& pass, const std::string& arg) {
  char* end = nullptr;
  const double v = std::strtod(arg.c_str(), &end);
  if (arg.empty() || end != arg.c_str() + arg.size())
    throw Error("pass '" + pass + "': argument '" + arg + "' is not a number");
  return v;
}

Pass no_arg(const char* name, Pass p, bool has_arg) {
  if (has_arg) throw Error(std::string("pass '") + name + "' takes no argument");
  return p;
}

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {{"verify", "", "checks the graph (types, SSA order, names) and leaves it unchanged"},
       [](const std::string&, bool a) { return no_arg("verify", verifier(), a); }},
      {{"dce", "", "removes nodes no output depends on"},
       [](const std::string&, bool a) { return no_arg("dce", dce(), a); }},
      {{"cse", "", "merges structurally equal nodes (never random ops)"},
       [](const std::string&, bool a) { return no_arg("cse", cse(), a); }},
      {{"fold", "", "evaluates nodes whose inputs are all constants"},
       [](const std::string&, bool a) { return no_arg("fold", fold(), a); }},
      {{"simplify", "", "x*1, x+0, permute of permute, reshape/cast chains"},
       [](const std::string&, bool a) { return no_arg("simplify", simplify(), a); }},
      {{"autodiff", "LOSS (default loss)", "adds grad.<param> outputs for every float param"},
       [](const std::string& arg, bool a) {
         AutodiffOptions o;
         if (a) o.loss = arg;
         return autodiff(o);
       }},
      {{"sgd", "LR (default 1e-3)", "torch.optim.SGD update of every param with a grad.<param> output"},
       [](const std::string& arg, bool a) {
         SGDOptions o;
         if (a) o.lr = number_arg("sgd", arg);
         return optimizer(o);
       }},
      {{"adamw", "LR (default 1e-3)", "torch.optim.AdamW update of every param with a grad.<param> output"},
       [](const std::string& arg, bool a) {
         AdamWOptions o;
         if (a) o.lr = number_arg("adamw", arg);
         return optimizer(o);
       }},
      {{"autocast", "bf16|f16 (default bf16)", "mixed precision by the default policy table (autocast.h)"},
       [](const std::string& arg, bool a) {
         if (!a || arg == "bf16") return autocast(DType::bf16);
         if (arg == "f16") return autocast(DType::f16);
         throw Error("pass 'autocast': argument '" + arg + "' is not bf16 or f16");
       }},
      {{"loss-scaling", "", "dynamic loss scaling for f16 (GradScaler semantics; after autodiff, before the optimizer)"},
       [](const std::string&, bool a) { return no_arg("loss-scaling", loss_scaling(), a); }},
      {{"quantize", "nf4|nf4-dq|int8 (default nf4)", "weight-only quantization of every linear but the LM head"},
       [](const std::string& arg, bool a) {
         QuantizeOptions o;
         if (!a || arg == "nf4") o.format = QuantFormat::nf4;
         else if (arg == "nf4-dq") o.format = QuantFormat::nf4, o.double_quant = true;
         else if (arg == "int8") o.format = QuantFormat::int8;
         else throw Error("pass 'quantize': argument '" + arg + "' is not nf4, nf4-dq or int8");
         return quantize(o);
       }},
      {{"lora", "R (default 8)", "LoRA adapters (alpha = 2R) on every linear or quantized linear but the LM head"},
       [](const std::string& arg, bool a) {
         LoraOptions o;
         if (a) o.r = static_cast<int64_t>(number_arg("lora", arg));
         o.alpha = 2.0 * static_cast<double>(o.r);
         o.target_regex = "(?!(.*\\.)?lm_head$).*";
         o.base_ops = {"linear", "linear_nf4", "linear_int8"};
         return lora(o);
       }},
      {{"remat", "BUDGET (default 1)", "rematerialization: saved activations within BUDGET x the save-everything bytes"},
       [](const std::string& arg, bool a) {
         RematOptions o;
         if (a) o.budget = number_arg("remat", arg);
         return remat(o);
       }},
  };
  return table;
}

}  // namespace

const std::vector<PassInfo>& registered_passes() {
  static const std::vector<PassInfo> infos = [] {
    std::vector<PassInfo> v;
    for (const Entry& e : entries()) v.push_back(e.info);
    return v;
  }();
  return infos;
}

Pass make_pass(const std::string& spec) {
  const size_t eq = spec.find('=');
  const std::string name = spec.substr(0, eq);
  const bool has_arg = eq != std::string::npos;
  const std::string arg = has_arg ? spec.substr(eq + 1) : "";
  for (const Entry& e : entries()) {
    if (e.info.name != name) continue;
    if (has_arg && e.info.argument.empty()) throw Error("pass '" + name + "' takes no argument, got '" + spec + "'");
    return e.make(arg, has_arg);
  }
  std::ostringstream known;
  for (const Entry& e : entries()) known << (known.tellp() ? ", " : "") << e.info.name;
  throw Error("unknown pass '" + name + "' (known passes: " + known.str() + ")");
}

std::vector<Pass> make_pipeline(const std::string& specs) {
  std::vector<Pass> passes;
  size_t start = 0, index = 1;
  while (true) {
    const size_t comma = specs.find(',', start);
    const std::string spec = specs.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (spec.empty()) throw Error("pass list '" + specs + "': entry " + std::to_string(index) + " is empty");
    try {
      passes.push_back(make_pass(spec));
    } catch (const Error& e) {
      throw Error("pass list entry " + std::to_string(index) + ": " + e.what());
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
    ++index;
  }
  return passes;
}

}  // namespace tessera
