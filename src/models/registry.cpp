// Named models for generators (see registered_model in models.h): the MLP
// and GPT training steps (forward, backward, AdamW update in one graph),
// their forward graphs, the GPT's QLoRA model (its evaluation graph) and
// fine-tuning step, and the op zoo,
// sized by key=value parameters; the MLP and GPT steps optionally
// rematerialized under a memory budget (remat.h). Building graphs only;
// nothing here compiles or runs them.
#include <algorithm>
#include <set>
#include <sstream>

#include "tessera/autocast.h"
#include "tessera/autodiff.h"
#include "tessera/error.h"
#include "tessera/lora.h"
#include "tessera/models.h"
#include "tessera/optimizer.h"
#include "tessera/quantize.h"
#include "tessera/remat.h"

namespace tessera {

namespace {

// Reads key=value parameters, refusing keys the model does not know.
class Params {
 public:
  Params(const std::string& model, const std::map<std::string, std::string>& values) : model_(model), values_(values) {}

  int64_t integer(const std::string& key, int64_t fallback) {
    const std::string* v = take(key);
    if (!v) return fallback;
    try {
      size_t used = 0;
      int64_t x = std::stoll(*v, &used);
      if (used == v->size() && x > 0) return x;
    } catch (const std::exception&) {
    }
    fail("model '", model_, "': parameter ", key, "=", *v, " is not a positive integer");
  }
  double real(const std::string& key, double fallback) {
    const std::string* v = take(key);
    if (!v) return fallback;
    try {
      size_t used = 0;
      double x = std::stod(*v, &used);
      if (used == v->size()) return x;
    } catch (const std::exception&) {
    }
    fail("model '", model_, "': parameter ", key, "=", *v, " is not a number");
  }
  bool flag(const std::string& key, bool fallback) {
    const std::string* v = take(key);
    if (!v) return fallback;
    if (*v != "true" && *v != "false")
      fail("model '", model_, "': parameter ", key, "=", *v, " is not true or false");
    return *v == "true";
  }
  const std::string& model() const { return model_; }
  std::string text(const std::string& key, const std::string& fallback) {
    const std::string* v = take(key);
    return v ? *v : fallback;
  }
  std::vector<int64_t> integers(const std::string& key, std::vector<int64_t> fallback) {
    const std::string* v = take(key);
    if (!v) return fallback;
    std::vector<int64_t> out;
    std::stringstream ss(*v);
    for (std::string item; std::getline(ss, item, ',');) {
      Params one(model_, {{key, item}});
      out.push_back(one.integer(key, 0));
    }
    return out;
  }
  // Throws Error naming any parameter that was not read.
  void done() const {
    for (const auto& [key, value] : values_)
      if (!used_.count(key)) fail("model '", model_, "' has no parameter '", key, "' (given ", key, "=", value, ")");
  }

 private:
  const std::string* take(const std::string& key) {
    auto it = values_.find(key);
    if (it == values_.end()) return nullptr;
    used_.insert(key);
    return &it->second;
  }
  std::string model_;
  std::map<std::string, std::string> values_;
  std::set<std::string> used_;
};

MlpConfig mlp_config(Params& p) {
  MlpConfig c;
  c.sizes = p.integers("sizes", c.sizes);
  c.batch = p.integer("batch", c.batch);
  c.activation = p.text("activation", c.activation);
  return c;
}

GptConfig gpt_config(Params& p) {
  GptConfig c;
  c.vocab_size = p.integer("vocab_size", 96);
  c.block_size = p.integer("block_size", 64);
  c.n_layer = p.integer("n_layer", 1);
  c.n_head = p.integer("n_head", 4);
  c.n_embd = p.integer("n_embd", 64);
  c.batch = p.integer("batch", 8);
  return c;
}

// remat=<fraction> (remat.h's budget, in [0, 1]) rematerializes the joint
// graph: the backward recomputes forward tensors instead of keeping them, so
// that the saved bytes fit that fraction of the save-everything figure.
// Absent or remat=none: the joint graph as it is. Lenient (remat.h's strict
// false): a budget that cannot be met is not an error. It runs on the f32
// joint graph, before autocast: after autocast it would count a cast as
// free to recompute, yet the backward's copy of GPT-2's f32 logits cast
// took 1.65 GB of its own and the planned peak rose at every budget.
Graph rematerialized(Params& p, const Graph& joint) {
  const std::string v = p.text("remat", "none");
  if (v == "none") return joint;
  double budget = -1;
  try {
    size_t used = 0;
    budget = std::stod(v, &used);
    if (used != v.size()) budget = -1;
  } catch (const std::exception&) {
  }
  if (!(budget >= 0 && budget <= 1))
    fail("model '", p.model(), "': parameter remat=", v, " is not none or a budget fraction in [0, 1]");
  return rematerialize(joint, {.budget = budget}).graph;
}

// The joint graph (autodiff) of `forward`, rematerialized (when the model
// takes remat=), under autocast=none|bf16|f16.
Graph joint_graph(Params& p, const Graph& forward, bool takes_remat, const AutodiffOptions& options = {}) {
  Graph joint = differentiate(forward, options);
  if (takes_remat) joint = rematerialized(p, joint);
  const std::string a = p.text("autocast", "none");
  if (a == "none") return joint;
  if (a != "bf16" && a != "f16") fail("model '", forward.name, "': autocast=", a, " is not none, bf16 or f16");
  joint = apply_autocast(joint, {.dtype = a == "bf16" ? DType::bf16 : DType::f16});
  return a == "f16" ? apply_loss_scaling(joint, {}) : joint;
}

AdamWOptions adamw_options(Params& p, AdamWOptions o = {}) {
  o.beta1 = p.real("beta1", o.beta1);
  o.beta2 = p.real("beta2", o.beta2);
  o.eps = p.real("eps", o.eps);
  o.weight_decay = p.real("weight_decay", o.weight_decay);
  o.max_grad_norm = p.real("max_grad_norm", o.max_grad_norm);
  return o;
}

// Removes the graph output `name` (its node stays when other nodes read it).
void drop_output(Graph& g, const std::string& name) {
  auto it = std::find_if(g.outputs.begin(), g.outputs.end(), [&](const auto& o) { return o.name == name; });
  if (it == g.outputs.end()) fail("graph '", g.name, "' has no output '", name, "'");
  g.outputs.erase(it);
}

// The QLoRA model: the GPT with every linear but the LM head in NF4
// (quantize.h) and LoRA adapters on `targets` (lora.h, PEFT's init, no
// dropout). `training` false: lora.h's evaluation graph (no dropout node).
// quantize=false keeps the base's linears f32 (plain LoRA); logits=false
// drops the logits output (the step returns the loss).
Graph gpt_qlora_forward(Params& p, bool training) {
  const GptConfig c = gpt_config(p);
  QuantizeOptions q;
  q.double_quant = p.flag("double_quant", false);
  const bool quantize = p.flag("quantize", true);
  Graph base = gpt(c);
  if (!p.flag("logits", true)) drop_output(base, "logits");
  LoraOptions lo;
  lo.r = p.integer("r", 8);
  lo.alpha = p.real("alpha", 16);
  std::stringstream targets(p.text("targets", "c_attn"));  // comma-separated patterns
  lo.target_modules.clear();
  for (std::string t; std::getline(targets, t, ',');) lo.target_modules.push_back(t);
  lo.base_ops = {"linear", "linear_nf4"};
  lo.training = training;
  return add_lora(quantize ? quantize_graph(base, q) : base, lo);
}

// The QLoRA fine-tuning step: gpt_qlora_forward, the gradient of the
// adapters only, and AdamW on them.
Graph gpt_qlora_train_step(Params& p) {
  const Graph forward = gpt_qlora_forward(p, /*training=*/true);
  AdamWOptions o;
  o.weight_decay = 0;
  o = adamw_options(p, o);
  return adamw(joint_graph(p, forward, /*takes_remat=*/false, lora_autodiff_options(forward)), o);
}

}  // namespace

std::vector<std::string> registered_models() {
  return {"gpt", "gpt_qlora", "gpt_qlora_train_step", "gpt_train_step", "mlp", "mlp_train_step", "op_zoo"};
}

Graph registered_model(const std::string& name, const std::map<std::string, std::string>& params) {
  Params p(name, params);
  Graph g;
  if (name == "mlp") {
    g = mlp(mlp_config(p));
  } else if (name == "mlp_train_step") {
    MlpConfig c = mlp_config(p);
    g = adamw(joint_graph(p, mlp(c), /*takes_remat=*/true), adamw_options(p));
  } else if (name == "gpt") {
    g = gpt(gpt_config(p));
  } else if (name == "gpt_train_step") {
    GptConfig c = gpt_config(p);
    Graph forward = gpt(c);
    if (!p.flag("logits", true)) drop_output(forward, "logits");
    g = adamw(joint_graph(p, forward, /*takes_remat=*/true), adamw_options(p));
  } else if (name == "gpt_qlora") {
    g = gpt_qlora_forward(p, /*training=*/false);
  } else if (name == "gpt_qlora_train_step") {
    g = gpt_qlora_train_step(p);
  } else if (name == "op_zoo") {
    const std::string d = p.text("dtype", "f32");
    g = op_zoo(parse_dtype(d));
  } else {
    std::string known;
    for (const std::string& m : registered_models()) known += (known.empty() ? "" : ", ") + m;
    fail("no registered model '", name, "' (known: ", known, ")");
  }
  p.done();
  return g;
}

}  // namespace tessera
