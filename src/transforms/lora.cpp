// The lora transform (lora.h): finds the linear-like nodes whose module
// matches a target pattern and adds a LoRA adapter beside each, plus the
// helpers that train only the adapters (their names, autodiff options, PEFT's
// initialization). It does not merge or remove adapters (lora_merge.cpp).
#include "tessera/lora.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/error.h"

namespace tessera {
namespace {

const std::string kWeightSuffix = ".weight";
const std::string kASuffix = ".lora_A.weight";
const std::string kBSuffix = ".lora_B.weight";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

std::string join(const std::vector<std::string>& items, size_t limit = 12) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < limit; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > limit) s += ", ... (" + std::to_string(items.size()) + " in all)";
  return s.empty() ? "(none)" : s;
}

void check_options(const LoraOptions& o) {
  if (o.r <= 0) fail("lora: r = ", o.r, " is invalid (need r > 0)");
  if (!(o.alpha > 0)) fail("lora: alpha = ", o.alpha, " is invalid (need alpha > 0)");
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) fail("lora: dropout = ", o.dropout, " is invalid (need 0 <= dropout < 1)");
  if (o.target_modules.empty() && o.target_regex.empty())
    fail("lora: no target_modules and no target_regex: nothing to adapt");
  for (const std::string& p : o.target_modules)
    if (p.empty()) fail("lora: an empty target module pattern");
  if (o.base_ops.empty()) fail("lora: base_ops is empty: no op counts as linear-like");
}

// PEFT's list form: the name itself or a dotted suffix of it.
bool matches(const std::string& module, const std::string& pattern) {
  return module == pattern || ends_with(module, "." + pattern);
}

// The module of a linear-like node: its second input is a param "<module>.weight".
std::string module_of(const Graph& g, const Node& n, const std::vector<std::string>& base_ops) {
  if (!contains(base_ops, n.op) || n.inputs.size() < 2) return "";
  const Node& w = g.node(n.inputs[1]);
  if (w.op != "param" || w.name.size() <= kWeightSuffix.size() || !ends_with(w.name, kWeightSuffix)) return "";
  return w.name.substr(0, w.name.size() - kWeightSuffix.size());
}

struct Adapted {
  int weight = -1;  // the "<module>.weight" param
  int64_t in = 0, out = 0;
  DType dtype = DType::f32;
  std::vector<int> nodes;  // the linear-like nodes reading the weight
};

int emit_leaf(GraphRewriter& rw, const std::string& op, const std::string& name, TensorType type,
              std::vector<double> values = {}) {
  Node n;
  n.op = op;
  n.name = name.empty() ? rw.fresh_name() : name;
  n.type = std::move(type);
  n.values = std::move(values);
  return rw.emit(std::move(n));
}

}  // namespace

Graph add_lora(const Graph& g, const LoraOptions& options) {
  check_options(options);
  std::regex regex;
  if (!options.target_regex.empty()) {
    try {
      regex = std::regex(options.target_regex, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail("lora: target_regex '", options.target_regex, "' is not a valid regex: ", e.what());
    }
  }

  // Every module of a linear-like node, in graph order.
  std::vector<std::string> modules;
  for (const Node& n : g.nodes) {
    const std::string m = module_of(g, n, options.base_ops);
    if (!m.empty() && !contains(modules, m)) modules.push_back(m);
  }
  auto no_match = [&](const std::string& what) {
    fail("lora: ", what, " matches no module of a linear-like node (ops ", join(options.base_ops),
         ") in graph '", g.name, "'; its modules are: ", join(modules));
  };
  std::set<std::string> selected;
  for (const std::string& p : options.target_modules) {
    bool hit = false;
    for (const std::string& m : modules)
      if (matches(m, p)) {
        selected.insert(m);
        hit = true;
      }
    if (!hit) no_match("target module pattern '" + p + "'");
  }
  if (!options.target_regex.empty()) {
    bool hit = false;
    for (const std::string& m : modules)
      if (std::regex_match(m, regex)) {
        selected.insert(m);
        hit = true;
      }
    if (!hit) no_match("target_regex '" + options.target_regex + "'");
  }

  // What each selected module needs: in/out features from x and the output.
  std::map<std::string, Adapted> adapted;
  std::map<int, std::string> node_module;  // adapted node id -> module
  for (const Node& n : g.nodes) {
    const std::string m = module_of(g, n, options.base_ops);
    if (m.empty() || !selected.count(m)) continue;
    const Node& x = g.node(n.inputs[0]);
    if (!is_float(x.type.dtype) || x.type.rank() < 1 || n.type.rank() < 1)
      fail("lora: ", n.op, " '", n.name, "' (module '", m,
           "'): the adapter needs a float input x [..., in] and an output [..., out]; got x '", x.name, "' ",
           to_string(x.type), " and output ", to_string(n.type));
    Adapted& a = adapted[m];
    const int64_t in = x.type.shape.back(), out = n.type.shape.back();
    if (a.nodes.empty()) {
      a.weight = n.inputs[1];
      a.in = in;
      a.out = out;
      a.dtype = x.type.dtype;
    } else if (a.in != in || a.out != out || a.dtype != x.type.dtype) {
      fail("lora: module '", m, "' is used by ", n.op, " '", n.name, "' with x ", to_string(x.type), " and output ",
           to_string(n.type), ", but by '", g.node(a.nodes[0]).name, "' with in = ", a.in, ", out = ", a.out,
           " (", dtype_name(a.dtype), "): one adapter cannot serve both");
    }
    a.nodes.push_back(n.id);
    node_module[n.id] = m;
  }
  for (const auto& [m, a] : adapted) {
    for (const std::string& name : {lora_a_name(m), lora_b_name(m)})
      if (g.find(name) >= 0) fail("lora: module '", m, "' already has a node named '", name, "' (adapted twice?)");
    // Merging changes the weight: every reader must get the adapter.
    for (const Node& n : g.nodes)
      for (size_t k = 0; k < n.inputs.size(); ++k)
        if (n.inputs[k] == a.weight && !(k == 1 && node_module.count(n.id)))
          fail("lora: the weight '", g.node(a.weight).name, "' of module '", m, "' is also read by ", n.op, " '",
               n.name, "', which gets no adapter (merging it would change that node too)");
  }

  const double scale = options.alpha / static_cast<double>(options.r);
  const bool with_dropout = options.training && options.dropout > 0.0;
  uint64_t offset = 0;  // a distinct Philox counter range per dropout node
  GraphRewriter rw(g);
  std::map<std::string, std::pair<int, int>> ab;  // module -> new ids of A, B
  for (const Node& n : g.nodes) {
    const int copied = rw.copy(n.id);
    if (n.op == "param") {
      for (const auto& [m, a] : adapted) {
        if (a.weight != n.id) continue;
        const int ai = emit_leaf(rw, "param", lora_a_name(m), {a.dtype, {options.r, a.in}});
        const int bi = emit_leaf(rw, "param", lora_b_name(m), {a.dtype, {a.out, options.r}});
        ab[m] = {ai, bi};
      }
      continue;
    }
    auto it = node_module.find(n.id);
    if (it == node_module.end()) continue;
    const auto [ai, bi] = ab.at(it->second);
    const int x = rw.mapped(n.inputs[0]);
    int d = x;
    if (with_dropout) {
      d = rw.emit_op("dropout", {x},
                  {{"p", options.dropout},
                   {"seed", static_cast<int64_t>(options.dropout_seed)},
                   {"offset", static_cast<int64_t>(offset)}});
      offset += static_cast<uint64_t>(rw.result().node(x).type.numel());
    }
    const int h = rw.emit_op("linear", {d, ai});  // [..., r]
    const int u = rw.emit_op("linear", {h, bi});  // [..., out]
    const DType ut = rw.result().node(u).type.dtype;
    const int c = emit_leaf(rw, "constant", "", {ut, {}}, {scale});
    int s = rw.emit_op("mul", {u, c});
    if (ut != n.type.dtype) s = rw.emit_op("cast", {s}, {{"dtype", std::string(dtype_name(n.type.dtype))}});
    if (rw.result().node(s).type != n.type)
      fail("lora: ", n.op, " '", n.name, "' (module '", it->second, "'): its output ", to_string(n.type),
           " is not [..., out] of x's leading dims; the adapter gives ", to_string(rw.result().node(s).type));
    rw.map(n.id, rw.emit_op("add", {copied, s}));
  }
  Graph out = std::move(rw).finish();
  verify(out, {true});
  return out;
}

Pass lora(LoraOptions options) {
  return {"lora", [options](const Graph& g) { return add_lora(g, options); }};
}

std::vector<std::string> lora_modules(const Graph& g) {
  std::vector<std::string> out;
  for (int id : g.params()) {
    const std::string& name = g.node(id).name;
    if (!ends_with(name, kASuffix)) continue;
    const std::string m = name.substr(0, name.size() - kASuffix.size());
    const int b = g.find(lora_b_name(m));
    if (b >= 0 && g.node(b).op == "param") out.push_back(m);
  }
  return out;
}

std::vector<std::string> lora_param_names(const Graph& g) {
  std::vector<std::string> out;
  for (int id : g.params()) {
    const std::string& name = g.node(id).name;
    if (ends_with(name, kASuffix) || ends_with(name, kBSuffix)) out.push_back(name);
  }
  return out;
}

AutodiffOptions lora_autodiff_options(const Graph& g, const std::string& loss) {
  AutodiffOptions o;
  o.loss = loss;
  o.params = lora_param_names(g);
  if (o.params.empty()) fail("lora_autodiff_options: graph '", g.name, "' has no LoRA adapter params");
  for (int id : g.params())
    if (!contains(o.params, g.node(id).name)) o.frozen.push_back(g.node(id).name);
  return o;
}

InitMap lora_init(const Graph& g) {
  InitMap m;
  for (const std::string& module : lora_modules(g)) {
    const Node& a = g.node(lora_a_name(module));
    // torch.nn.init.kaiming_uniform_(A, a=sqrt(5)) on [r, in]: fan_in = in.
    const double neg_slope = std::sqrt(5.0);
    const double gain = std::sqrt(2.0 / (1.0 + neg_slope * neg_slope));
    const double bound = gain * std::sqrt(3.0 / static_cast<double>(a.type.shape.back()));
    m[a.name] = ParamInit{ParamInit::uniform, -bound, bound};
    m[lora_b_name(module)] = ParamInit{ParamInit::zeros, 0, 0};
  }
  return m;
}

}  // namespace tessera
