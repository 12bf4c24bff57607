// LoRA export (lora.h): merge_lora folds trained adapters into the weights of
// a state dict (W + (alpha / r) B A, a dequantize callback first for a
// quantized base), and remove_lora takes the adapter nodes that lora() built
// back out of a graph. It does not add adapters (lora.cpp) or write files.
#include <cmath>
#include <set>

#include "graph_rewrite.h"
#include "tessera/error.h"
#include "tessera/lora.h"

namespace tessera {
namespace {

const std::string kASuffix = ".lora_A.weight";
const std::string kBSuffix = ".lora_B.weight";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string module_of_adapter(const std::string& name) {
  if (ends_with(name, kASuffix)) return name.substr(0, name.size() - kASuffix.size());
  if (ends_with(name, kBSuffix)) return name.substr(0, name.size() - kBSuffix.size());
  return "";
}

bool is_adapter_param(const Node& n) { return n.op == "param" && !module_of_adapter(n.name).empty(); }

}  // namespace

std::map<std::string, Buffer> merge_lora(const std::map<std::string, Buffer>& state, const LoraOptions& options,
                                         const Dequantizer& dequantize) {
  if (options.r <= 0) fail("merge_lora: r = ", options.r, " is invalid (need r > 0)");
  if (!(options.alpha > 0)) fail("merge_lora: alpha = ", options.alpha, " is invalid (need alpha > 0)");
  const double scale = options.alpha / static_cast<double>(options.r);

  std::set<std::string> modules;
  for (const auto& [name, b] : state) {
    const std::string m = module_of_adapter(name);
    if (m.empty()) continue;
    modules.insert(m);
    if (!state.count(lora_a_name(m)) || !state.count(lora_b_name(m)))
      fail("merge_lora: '", name, "' has no partner '",
           ends_with(name, kASuffix) ? lora_b_name(m) : lora_a_name(m), "' in the state dict");
  }

  std::map<std::string, Buffer> out = state;
  for (const std::string& m : modules) {
    const std::string wname = m + ".weight";
    const Buffer& a = state.at(lora_a_name(m));
    const Buffer& b = state.at(lora_b_name(m));
    if (!state.count(wname)) fail("merge_lora: module '", m, "' has adapters but no weight '", wname, "'");
    Buffer w;
    std::vector<std::string> replaces;
    if (dequantize) {
      DequantizedWeight d = dequantize(m, state);
      w = d.weight;
      replaces = std::move(d.replaces);
      if (!w.defined()) fail("merge_lora: the dequantizer returned no weight for module '", m, "'");
    } else {
      w = state.at(wname);
    }
    if (!is_float(w.dtype()) || w.shape().size() != 2)
      fail("merge_lora: the weight of module '", m, "' is ", to_string(w.type()),
           dequantize ? " after dequantizing" : "", "; merging needs a float [out, in] matrix",
           dequantize ? "" : " (a quantized weight needs a dequantizer)");
    const int64_t out_f = w.shape()[0], in_f = w.shape()[1];
    if (!is_float(a.dtype()) || !is_float(b.dtype()) || a.shape() != Shape{options.r, in_f} ||
        b.shape() != Shape{out_f, options.r})
      fail("merge_lora: module '", m, "': weight ", to_string(w.type()), " with r = ", options.r, " needs '",
           lora_a_name(m), "' f[", options.r, ", ", in_f, "] and '", lora_b_name(m), "' f[", out_f, ", ", options.r,
           "], got ", to_string(a.type()), " and ", to_string(b.type()),
           dequantize ? "" : " (a weight stored in another layout, or quantized, needs a dequantizer)");
    const std::vector<double> av = a.to_f64(), bv = b.to_f64();
    std::vector<double> wv = w.to_f64();
    const int64_t r = options.r;
    for (int64_t o = 0; o < out_f; ++o)
      for (int64_t i = 0; i < in_f; ++i) {
        double s = 0;
        for (int64_t k = 0; k < r; ++k) s += bv[o * r + k] * av[k * in_f + i];
        wv[o * in_f + i] += scale * s;
      }
    out[wname] = Buffer::from(wv, w.shape(), w.dtype());
    out.erase(lora_a_name(m));
    out.erase(lora_b_name(m));
    for (const std::string& name : replaces)
      if (name != wname) out.erase(name);
  }
  return out;
}

Graph remove_lora(const Graph& g) {
  // Recognizes what lora() builds beside a base node:
  //   add(base, [cast]([mul](linear(linear([dropout](x), A), B), constant)))
  // (the mul may be gone when simplify removed a scale of 1) and collects the
  // adapter nodes; each add is replaced by its base.
  const int n = static_cast<int>(g.nodes.size());
  std::vector<int> replace(n);
  for (int i = 0; i < n; ++i) replace[i] = i;
  std::vector<bool> adapter(n, false);
  // The scale constants and dropouts: removed unless something else reads
  // them (a model's own dropout may feed an adapter directly when the adapter
  // has none).
  std::set<int> maybe_shared;
  for (const Node& add : g.nodes) {
    if (add.op != "add" || add.inputs.size() != 2) continue;
    std::vector<int> chain = {add.id};
    int s = add.inputs[1];
    if (g.node(s).op == "cast") {
      chain.push_back(s);
      s = g.node(s).inputs[0];
    }
    int scale = -1;
    if (g.node(s).op == "mul") {
      const Node& mul = g.node(s);
      if (mul.inputs.size() != 2 || g.node(mul.inputs[1]).op != "constant") continue;
      chain.push_back(s);
      scale = mul.inputs[1];
      s = mul.inputs[0];
    }
    const Node& u = g.node(s);
    if (u.op != "linear" || u.inputs.size() != 2) continue;
    const Node& b = g.node(u.inputs[1]);
    const Node& h = g.node(u.inputs[0]);
    if (!is_adapter_param(b) || !ends_with(b.name, kBSuffix) || h.op != "linear" || h.inputs.size() != 2) continue;
    const Node& a = g.node(h.inputs[1]);
    if (a.name != lora_a_name(module_of_adapter(b.name)) || a.op != "param") continue;
    chain.insert(chain.end(), {u.id, b.id, h.id, a.id});
    if (scale >= 0) maybe_shared.insert(scale);
    if (g.node(h.inputs[0]).op == "dropout") maybe_shared.insert(h.inputs[0]);
    for (int id : chain) adapter[id] = true;
    replace[add.id] = replace[add.inputs[0]];
  }
  for (int c : maybe_shared) {
    bool only_adapters = true;
    for (const Node& node : g.nodes)
      for (int in : node.inputs) only_adapters = only_adapters && (in != c || adapter[node.id]);
    for (const GraphOutput& o : g.outputs) only_adapters = only_adapters && o.node != c;
    adapter[c] = only_adapters;
  }

  Graph out = g;
  for (Node& node : out.nodes)
    for (int& in : node.inputs) in = replace[in];
  for (GraphOutput& o : out.outputs) o.node = replace[o.node];
  // An adapter node is removed only when nothing else reads it.
  for (const Node& node : out.nodes) {
    if (adapter[node.id]) continue;
    for (int in : node.inputs)
      if (adapter[in] || is_adapter_param(out.node(in)))
        fail("remove_lora: ", node.op, " '", node.name, "' reads '", out.node(in).name,
             "', which belongs to a LoRA adapter, in a way lora() does not build");
  }
  for (const GraphOutput& o : out.outputs)
    if (adapter[o.node] || is_adapter_param(out.node(o.node)))
      fail("remove_lora: output '", o.name, "' is the adapter node '", out.node(o.node).name, "'");
  for (const Node& node : out.nodes)
    if (is_adapter_param(node) && !adapter[node.id])
      fail("remove_lora: the adapter param '", node.name, "' is not part of an adapter lora() builds");
  std::vector<bool> keep(n);
  for (int i = 0; i < n; ++i) keep[i] = !adapter[i];
  Graph result = keep_only(out, keep);
  verify(result, {true});
  return result;
}

}  // namespace tessera
