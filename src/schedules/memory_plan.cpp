// Liveness and arena offsets for a partitioned graph (see memory_plan.h).
#include "memory_plan.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "op_registry.h"

namespace tessera {

namespace {

size_t aligned(size_t bytes) { return std::max<size_t>(1, (bytes + kArenaAlignment - 1) / kArenaAlignment) * kArenaAlignment; }

// Whether the kernel has a product in it: a library call on GPUs (cuBLASLt,
// whose epilogues promise nothing about reading an operand they overwrite,
// the fused attention, the embedding gradient).
bool library_call(const Kernel& k) {
  return std::any_of(k.graph.nodes.begin(), k.graph.nodes.end(), [](const Node& n) {
    return !n.is_leaf() && (op_def(n.op).kind == OpKind::contraction || n.op == "embedding_grad");
  });
}

// Ops whose element i is their input's element i in row-major order.
bool keeps_order(const Node& n) { return n.op == "reshape" || n.op == "squeeze" || n.op == "unsqueeze"; }

// How kernel node `from` reads kernel node `leaf`: not at all, only through
// elementwise ops and reshapes (so at its own row-major index, when the two
// have as many elements: a broadcast on the way would need more), or otherwise.
enum class Reads { none, pointwise, other };

Reads reads(const Graph& k, int from, int leaf, std::vector<int>& memo) {
  if (from == leaf) return Reads::pointwise;
  int& m = memo[from];
  if (m >= 0) return static_cast<Reads>(m);
  const Node& n = k.nodes[from];
  Reads r = Reads::none;
  if (!n.is_leaf()) {
    OpKind kind = op_def(n.op).kind;
    const bool pointwise = kind == OpKind::elementwise || kind == OpKind::random || keeps_order(n);
    for (int in : n.inputs) {
      Reads i = reads(k, in, leaf, memo);
      if (i != Reads::none) r = std::max(r, pointwise ? i : Reads::other);
    }
  }
  m = static_cast<int>(r);
  return r;
}

// The outputs "new.X" that may be written over X (memory_plan.h).
std::vector<MemoryPlan::InPlaceUpdate> plan_updates(const Graph& g, const std::vector<Kernel>& kernels) {
  const int n = static_cast<int>(g.nodes.size());
  std::vector<int> writer(n, -1), last_reader(n, -1), output_count(n, 0);
  for (int s = 0; s < static_cast<int>(kernels.size()); ++s) {
    for (int r : kernels[s].roots) writer[r] = s;
    for (int in : kernels[s].inputs) last_reader[in] = s;
  }
  for (const GraphOutput& o : g.outputs) ++output_count[o.node];
  std::vector<MemoryPlan::InPlaceUpdate> updates;
  std::vector<bool> taken(n, false);
  for (int i = 0; i < static_cast<int>(g.outputs.size()); ++i) {
    const GraphOutput& o = g.outputs[i];
    if (o.name.rfind("new.", 0) != 0) continue;
    const int x = g.find(o.name.substr(4));
    if (x < 0 || (g.nodes[x].op != "input" && g.nodes[x].op != "param") || taken[x] || output_count[x] > 0) continue;
    const int s = writer[o.node];
    if (s < 0 || output_count[o.node] != 1 || g.nodes[x].type != g.nodes[o.node].type || last_reader[x] > s) continue;
    const Kernel& k = kernels[s];
    const int outs = static_cast<int>(k.roots.size());
    const int j = static_cast<int>(std::find(k.roots.begin(), k.roots.end(), o.node) - k.roots.begin());
    const auto at = std::find(k.inputs.begin(), k.inputs.end(), x);
    if (at == k.inputs.end()) continue;  // not read at all: then nothing orders the write (kept simple)
    const int leaf = static_cast<int>(at - k.inputs.begin());  // kernel inputs are its first nodes
    std::vector<int> memo(k.graph.nodes.size(), -1);
    bool ok = true;
    for (int m = 0; m < outs && ok; ++m) {
      Reads r = reads(k.graph, k.graph.outputs[m].node, leaf, memo);
      // Outputs after j are computed before it in each element (last first).
      ok = r != Reads::other && (r == Reads::none || m >= j);
    }
    if (!ok) continue;
    updates.push_back({i, x});
    taken[x] = true;
  }
  return updates;
}

}  // namespace

MemoryPlan plan_memory(const Graph& g, const std::vector<Kernel>& kernels) {
  MemoryPlan plan;
  const int n = static_cast<int>(g.nodes.size());
  plan.slot_of_node.assign(n, -1);
  std::vector<bool> is_output(n, false);
  for (const GraphOutput& o : g.outputs) is_output[o.node] = true;

  for (int s = 0; s < static_cast<int>(kernels.size()); ++s)
    for (int r : kernels[s].roots) {
      if (is_output[r]) continue;
      MemoryPlan::Slot slot;
      slot.node = r;
      slot.bytes = aligned(g.nodes[r].type.bytes());
      slot.first = slot.last = s;
      plan.slot_of_node[r] = static_cast<int>(plan.slots.size());
      plan.slots.push_back(slot);
    }
  for (int s = 0; s < static_cast<int>(kernels.size()); ++s)
    for (int in : kernels[s].inputs)
      if (plan.slot_of_node[in] >= 0) plan.slots[plan.slot_of_node[in]].last = s;

  // In-place reuse: a slot joins the allocation of an input that dies where it is written.
  const int count = static_cast<int>(plan.slots.size());
  std::vector<int> alloc(count);  // slot -> the slot that owns its allocation
  std::iota(alloc.begin(), alloc.end(), 0);
  for (int s = 0; s < static_cast<int>(kernels.size()); ++s) {
    const Kernel& k = kernels[s];
    if (k.roots.size() != 1 || plan.slot_of_node[k.roots[0]] < 0 || library_call(k)) continue;
    const Node& out = g.nodes[k.roots[0]];
    for (int i = 0; i < static_cast<int>(k.inputs.size()); ++i) {
      const int in = k.inputs[i];
      int is = plan.slot_of_node[in];
      if (is < 0 || plan.slots[is].last != s || g.nodes[in].type.numel() != out.type.numel() ||
          g.nodes[in].type.bytes() != out.type.bytes())
        continue;
      std::vector<int> memo(k.graph.nodes.size(), -1);  // per input: reads() caches for one leaf
      if (reads(k.graph, k.graph.outputs[0].node, i, memo) != Reads::pointwise) continue;  // kernel inputs come first
      int os = plan.slot_of_node[k.roots[0]];
      alloc[os] = alloc[is];
      plan.slots[os].in_place_of = in;
      break;
    }
  }

  // One interval per allocation: from its first writer to its last reader.
  std::vector<int> first(count, 0), last(count, -1);
  std::vector<size_t> bytes(count, 0);
  for (int i = 0; i < count; ++i) {
    int a = alloc[i];
    if (last[a] < 0) first[a] = plan.slots[i].first;
    first[a] = std::min(first[a], plan.slots[i].first);
    last[a] = std::max(last[a], plan.slots[i].last);
    bytes[a] = std::max(bytes[a], plan.slots[i].bytes);
  }
  std::vector<int> order;
  for (int i = 0; i < count; ++i)
    if (alloc[i] == i) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return bytes[a] > bytes[b]; });
  std::vector<size_t> offset(count, 0);
  std::vector<int> placed;
  for (int a : order) {
    // The lowest offset clear of every placed allocation whose interval overlaps.
    std::vector<std::pair<size_t, size_t>> busy;
    for (int p : placed)
      if (first[p] <= last[a] && first[a] <= last[p]) busy.emplace_back(offset[p], offset[p] + bytes[p]);
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (at + bytes[a] <= lo) break;
      at = std::max(at, hi);
    }
    offset[a] = at;
    placed.push_back(a);
    plan.peak = std::max(plan.peak, at + bytes[a]);
  }
  plan.dead_after.resize(kernels.size());
  for (int i = 0; i < count; ++i) {
    MemoryPlan::Slot& slot = plan.slots[i];
    slot.offset = offset[alloc[i]];
    plan.total += slot.bytes;
    if (last[alloc[i]] == slot.last) plan.dead_after[slot.last].push_back(i);  // its bytes are free after this step
  }
  plan.updates = plan_updates(g, kernels);
  return plan;
}

std::string MemoryPlan::text(const Graph& g) const {
  std::ostringstream os;
  os << "memory plan: " << slots.size() << (slots.size() == 1 ? " intermediate" : " intermediates")
     << " in an arena of " << peak << " bytes (" << total
     << " without reuse)\n";
  for (const Slot& s : slots) {
    const Node& node = g.nodes[s.node];
    os << "  " << node.name << " " << to_string(node.type) << ": bytes [" << s.offset << ", " << s.offset + s.bytes
       << "), live steps " << s.first << ".." << s.last;
    if (s.in_place_of >= 0) os << ", in place of " << g.nodes[s.in_place_of].name;
    os << "\n";
  }
  if (!updates.empty()) {
    size_t bytes = 0;
    for (const InPlaceUpdate& u : updates) bytes += g.nodes[u.input].type.bytes();
    os << "in place: " << updates.size() << (updates.size() == 1 ? " output" : " outputs")
       << " may be written over their inputs (" << bytes << " bytes not needed twice)\n";
    for (const InPlaceUpdate& u : updates)
      os << "  " << g.outputs[u.output].name << " over " << g.nodes[u.input].name << "\n";
  }
  return os.str();
}

}  // namespace tessera
