// The quantize pass and quantize_state_dict (quantize.h): selects linear
// nodes by module-name globs, replaces each selected "<m>.weight" param by
// the packed weight and its scales, and each linear reading it by
// linear_int8 / linear_nf4. It does not quantize values itself
// (quantize_weights.cpp) or train anything.
#include "tessera/quantize.h"

#include <algorithm>
#include <set>

#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "tessera/quant_ops.h"

namespace tessera {

namespace {

constexpr const char* kSuffix = ".weight";

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// Whole-string glob: '*' any run, '?' any one character.
bool glob(const char* p, const char* s) {
  if (*p == '\0') return *s == '\0';
  if (*p == '*') return glob(p + 1, s) || (*s != '\0' && glob(p, s + 1));
  if (*s == '\0') return false;
  return (*p == '?' || *p == *s) && glob(p + 1, s + 1);
}

bool is_lm_head(const std::string& m) { return m == "lm_head" || ends_with(m, ".lm_head"); }

std::string module_of(const std::string& weight) { return weight.substr(0, weight.size() - std::string(kSuffix).size()); }

// Why the linear-read weight param `id` of g cannot be quantized ("" if it can).
std::string unquantizable(const Graph& g, int id) {
  const Node& w = g.node(id);
  if (w.type.dtype != DType::f32 && w.type.dtype != DType::bf16)
    return "its weight is " + to_string(w.type) + " (needs f32 or bf16)";
  for (const Node& n : g.nodes)
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (n.inputs[k] != id) continue;
      if (n.op != "linear" || k != 1)
        return "its weight is read by node '" + n.name + "' (" + n.op + ") as input " + std::to_string(k) +
               ", not only as the weight of linear nodes";
      const Node& x = g.node(n.inputs[0]);
      if (x.type.dtype != DType::f32)
        return "linear '" + n.name + "' has input " + to_string(x.type) + " (quantized linears take f32)";
      if (n.inputs.size() == 3 && g.node(n.inputs[2]).type.dtype != DType::f32)
        return "linear '" + n.name + "' has bias " + to_string(g.node(n.inputs[2]).type) + " (needs f32)";
    }
  for (const GraphOutput& o : g.outputs)
    if (o.node == id) return "its weight is the graph output '" + o.name + "'";
  return "";
}

// The selected weight params of g, by id.
std::vector<int> selected_weights(const Graph& g, const QuantizeOptions& o) {
  std::set<int> candidates;
  for (const Node& n : g.nodes)
    if (n.op == "linear" && n.inputs.size() >= 2) {
      const Node& w = g.node(n.inputs[1]);
      if (w.op == "param" && ends_with(w.name, kSuffix) && w.type.rank() == 2) candidates.insert(w.id);
    }
  std::vector<int> out;
  for (int id : candidates) {
    const std::string m = module_of(g.node(id).name);
    const std::string why = unquantizable(g, id);
    if (o.modules.empty()) {
      if (!is_lm_head(m) && why.empty()) out.push_back(id);
      continue;
    }
    const bool match = std::any_of(o.modules.begin(), o.modules.end(),
                                   [&](const std::string& p) { return glob(p.c_str(), m.c_str()); });
    if (!match) continue;
    if (!why.empty()) fail("quantize: module '", m, "' of graph '", g.name, "' matches a pattern but ", why);
    out.push_back(id);
  }
  return out;
}

void check_options(const QuantizeOptions& o) {
  if (o.double_quant && o.format != QuantFormat::nf4) fail("quantize: double_quant is for the nf4 format only");
}

// The new params of module m (weight [N, K]), in order: name, type.
std::vector<std::pair<std::string, TensorType>> new_params(const std::string& m, int64_t N, int64_t K,
                                                           const QuantizeOptions& o) {
  const std::string w = m + kSuffix;
  if (o.format == QuantFormat::int8)
    return {{w, {DType::i8, {N, K}}}, {w + ".scale", {DType::f32, {N}}}};
  const int64_t blocks = ceil_div(N * K, kNF4BlockSize);
  std::vector<std::pair<std::string, TensorType>> p = {{w, {DType::u8, {ceil_div(N * K, 2), 1}}}};
  if (!o.double_quant) {
    p.push_back({w + ".absmax", {DType::f32, {blocks}}});
    return p;
  }
  p.push_back({w + ".absmax", {DType::u8, {blocks}}});
  p.push_back({w + ".nested_absmax", {DType::f32, {ceil_div(blocks, kNestedBlockSize)}}});
  p.push_back({w + ".nested_quant_map", {DType::f32, {256}}});
  p.push_back({w + ".nested_offset", {DType::f32, {}}});
  return p;
}

}  // namespace

std::vector<std::string> quantized_modules(const Graph& g, const QuantizeOptions& options) {
  check_options(options);
  std::vector<std::string> r;
  for (int id : selected_weights(g, options)) r.push_back(module_of(g.node(id).name));
  return r;
}

Graph quantize_graph(const Graph& g, const QuantizeOptions& options) {
  check_options(options);
  const std::vector<int> weights = selected_weights(g, options);
  std::map<int, std::vector<int>> new_ids;  // old weight id -> its new params' ids
  GraphRewriter rw(g);
  for (const Node& n : g.nodes) {
    if (std::find(weights.begin(), weights.end(), n.id) != weights.end()) {
      const std::string m = module_of(n.name);
      std::vector<int>& ids = new_ids[n.id];
      for (const auto& [name, type] : new_params(m, n.type.shape[0], n.type.shape[1], options)) {
        Node p;
        p.name = name;
        p.op = "param";
        p.type = type;
        ids.push_back(rw.emit(p));
      }
      rw.map(n.id, ids[0]);
      continue;
    }
    if (n.op == "linear" && new_ids.count(n.inputs[1])) {
      const Node& w = g.node(n.inputs[1]);
      Node q;
      q.name = n.name;
      q.op = options.format == QuantFormat::int8 ? "linear_int8" : "linear_nf4";
      q.inputs.push_back(rw.mapped(n.inputs[0]));
      for (int id : new_ids.at(n.inputs[1])) q.inputs.push_back(id);
      if (n.inputs.size() == 3) q.inputs.push_back(rw.mapped(n.inputs[2]));
      if (options.format == QuantFormat::nf4)
        q.attrs = {{"out_features", w.type.shape[0]}, {"in_features", w.type.shape[1]}};
      q.type = infer_node_type(rw.result(), q);
      rw.map(n.id, rw.emit(q));
      continue;
    }
    rw.copy(n.id);
  }
  Graph out = std::move(rw).finish();
  verify(out, {true});
  return out;
}

Pass quantize(QuantizeOptions options) {
  return Pass{"quantize", [options](const Graph& g) { return quantize_graph(g, options); }};
}

std::map<std::string, Buffer> quantize_state_dict(const Graph& original, const std::map<std::string, Buffer>& state,
                                                  const QuantizeOptions& options) {
  check_options(options);
  std::map<std::string, Buffer> out = state;
  for (int id : selected_weights(original, options)) {
    const Node& p = original.node(id);
    auto it = state.find(p.name);
    if (it == state.end()) fail("quantize_state_dict: the state has no '", p.name, "' (", to_string(p.type), ")");
    const DType d = it->second.dtype();
    if (it->second.shape() != p.type.shape || (d != DType::f32 && d != DType::bf16))
      fail("quantize_state_dict: '", p.name, "' is ", to_string(it->second.type()), " but graph '", original.name,
           "' has ", to_string(p.type), " (an f32 or bf16 weight of that shape is quantized)");
    const std::string w = p.name;
    if (options.format == QuantFormat::int8) {
      Int8Weight q = quantize_int8(it->second);
      out[w] = q.weight;
      out[w + ".scale"] = q.scale;
      continue;
    }
    NF4Weight q = quantize_nf4(it->second, options.double_quant);
    out[w] = q.weight;
    out[w + ".absmax"] = q.absmax;
    if (options.double_quant) {
      out[w + ".nested_absmax"] = q.nested_absmax;
      out[w + ".nested_quant_map"] = q.nested_quant_map;
      out[w + ".nested_offset"] = q.nested_offset;
    }
  }
  return out;
}

}  // namespace tessera
