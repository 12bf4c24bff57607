// Splitting a graph into kernels (see partition.h).
#include "partition.h"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>

#include "halide_util.h"
#include "library_attention.h"
#include "library_embedding_grad.h"
#include "library_gemm.h"
#include "library_quant_linear.h"
#include "op_registry.h"
#include "user_def.h"

namespace tessera {

namespace {

// At most this many buffers (inputs and outputs) in a kernel of joined
// groups: Halide passes each to a CUDA kernel as parameters, which must stay
// within 4 KB.
constexpr size_t kMaxJoinedBuffers = 64;

}  // namespace

bool is_materialized(const Node& node) {
  if (node.is_leaf()) return false;
  if (node.op == "define") return node.user && uses_reduction(node.user->body);
  if (node.op == "define_grad") return true;  // its adjoint Funcs are stages with updates
  const OpKind kind = op_def(node.op).kind;
  return kind == OpKind::reduction || kind == OpKind::contraction;
}

bool row_wise(const Node& node) {
  if (node.type.rank() == 0) return false;
  if (node.op == "layer_norm" || node.op == "rms_norm" || node.op == "layer_norm_grad" || node.op == "rms_norm_grad")
    return true;
  return (node.op == "softmax" || node.op == "log_softmax") &&
         normalize_axis(attr_int(node.attrs, "axis", node.op), node.type.rank()) == node.type.rank() - 1;
}

int row_epilogue_of(const Graph& g, const Node& node, const std::vector<int>& readers) {
  if (node.type.rank() == 0 || op_def(node.op).kind != OpKind::elementwise) return -1;
  int row = -1;
  for (int in : node.inputs) {
    const Node& x = g.node(in);
    if (!row_wise(x) || readers[in] != 1 || x.type.shape != node.type.shape) continue;
    if (row >= 0) return -1;  // two row-wise inputs: two sets of rows
    row = in;
  }
  return row;
}

int row_epilogue_input(const Graph& kernel, const std::vector<int>& outputs) {
  for (const Node& node : kernel.nodes)
    if (row_wise(node) && std::find(outputs.begin(), outputs.end(), node.id) == outputs.end()) return node.id;
  return -1;
}

const Node* sole_computation(const Kernel& kernel) {
  const Graph& kg = kernel.graph;
  if (kg.outputs.size() != 1) return nullptr;
  const Node& n = kg.nodes[kg.outputs[0].node];
  for (const Node& other : kg.nodes)
    if (other.op != "input" && other.id != n.id) return nullptr;
  return &n;
}

std::vector<Kernel> partition(const Graph& g) {
  const CostModel cpu = cpu_x86_cost_model();
  return partition(g, &cpu);
}

std::vector<Kernel> partition(const Graph& g, const CostModel* cost, std::vector<RematDecision>* decisions,
                              bool library_gemm) {
  const int n = static_cast<int>(g.nodes.size());
  std::vector<bool> root(n, false);
  for (const Node& node : g.nodes) root[node.id] = is_materialized(node);
  // A computed scalar read by a tensor op is computed once, not per element
  // (optimizer bias corrections, loss scales, norms).
  for (const Node& node : g.nodes)
    if (node.type.rank() > 0)
      for (int in : node.inputs)
        if (g.nodes[in].type.rank() == 0 && !g.nodes[in].is_leaf()) root[in] = true;
  for (const GraphOutput& o : g.outputs) {
    const Node& out = g.node(o.node);
    if (out.op != "input" && out.op != "param") root[o.node] = true;  // constants too
  }
  if (library_gemm)
    for (const Node& node : g.nodes) {
      if ((node.op == "matmul" || node.op == "linear") && library_gemm_dtype(node.type.dtype))
        for (int in : node.inputs)
          if (int m = gemm_operand_to_materialize(g, in, root); m >= 0) root[m] = true;
      if (embedding_grad_kernel_takes(g, node) || quant_linear_kernel_takes(g, node)) {
        root[node.id] = true;  // a kernel of its own: the CUDA kernel's call, which reads dense buffers
        for (int in : node.inputs)
          if (!g.nodes[in].is_leaf() || g.nodes[in].op == "constant") root[in] = true;
      }
    }
  // A materialized gelu_grad whose gradient input is a product read by
  // nothing else computes that product in its own kernel: cuBLASLt's DGELU
  // epilogue (library_gemm.h); the product is never written, and the GELU
  // input, which the epilogue reads as a dense matrix, is materialized.
  std::vector<bool> dgelu(n, false), row_epilogue(n, false);
  const std::vector<int> readers = g.use_counts();
  // The tensors fused attention calls write in place (library_attention.h).
  const std::vector<bool> writes_attention =
      library_gemm ? place_attention_results(g, readers, root) : std::vector<bool>(n, false);
  if (library_gemm) {
    for (const Node& node : g.nodes)
      if (root[node.id] && gemm_takes_dgelu_epilogue(g, node) && readers[node.inputs[1]] == 1) {
        root[node.inputs[1]] = false;
        dgelu[node.id] = true;
        const Node& x = g.nodes[node.inputs[0]];
        if (!x.is_leaf() || x.op == "constant") root[x.id] = true;
      }
  }
  // A materialized relu of a linear that nothing else reads (readers counts
  // graph outputs too) computes the linear in its own kernel: cuBLASLt's
  // RELU epilogue (library_gemm.h); the product is never written.
  std::vector<bool> relu_epilogue(n, false);
  if (library_gemm)
    for (const Node& node : g.nodes)
      if (root[node.id] && gemm_takes_relu_epilogue(g, node) && readers[node.inputs[0]] == 1) {
        root[node.inputs[0]] = false;
        relu_epilogue[node.id] = true;
      }
  if (cost) {
    std::vector<RematDecision> remat = decide_kernel_remat(g, root, *cost);
    if (decisions) *decisions = std::move(remat);
  }
  // After the kernel-level decisions, which may materialize a view the
  // fused attention would otherwise read through.
  if (library_gemm) place_attention_operands(g, root);
  // A row-wise op read only by a materialized cast is computed in the cast's
  // kernel (a row epilogue: partition.h). After the kernel-level decisions,
  // which decide a remat clone with its original as one node: a layer
  // norm's clone in the backward and its original in the forward, each read
  // by its own cast, would otherwise count as one node with two readers and
  // be materialized.
  if (library_gemm)
    for (const Node& node : g.nodes)
      if (int row = root[node.id] ? row_epilogue_of(g, node, readers) : -1; row >= 0) {
        root[row] = false;
        row_epilogue[node.id] = true;
      }
  // A widening cast of a materialized tensor (the f32 logits output of a
  // bf16 product, say) is read by other kernels through its narrower input:
  // they convert again rather than read twice the bytes.
  std::vector<bool> read_through(n, false);
  for (const Node& node : g.nodes)
    if (root[node.id] && node.op == "cast" && node.type.rank() > 0) {
      const Node& src = g.nodes[node.inputs[0]];
      read_through[node.id] = node.type.bytes() > src.type.bytes() &&
                              (root[src.id] || src.op == "input" || src.op == "param");
    }

  // Arguments of the kernel computing the nodes of `members`: the roots
  // outside it and the graph inputs and params that its computation reads.
  auto arguments = [&](const std::vector<int>& members) {
    std::vector<bool> inside(n, false), member(n, false);
    for (int r : members) inside[r] = member[r] = true;
    // Library calls (GEMMs and quantized linears, which are contractions,
    // fused attention, the embedding gradient) read dense operands.
    const Node& first = g.nodes[members[0]];
    const bool library = library_gemm && (op_def(first.op).kind == OpKind::contraction ||
                                           first.op == "embedding_grad" || dgelu[first.id] ||
                                           relu_epilogue[first.id] || writes_attention[first.id]);
    auto argument = [&](int id) {
      const Node& node = g.nodes[id];
      return !member[id] && (!read_through[id] || library) && (root[id] || node.op == "input" || node.op == "param");
    };
    std::vector<int> args;
    for (int id = members.back(); id >= 0; --id) {
      if (!inside[id]) continue;
      const Node& node = g.nodes[id];
      if (argument(id)) continue;
      for (int in : node.inputs) inside[in] = true;
    }
    for (int id = 0; id < members.back(); ++id)
      if (inside[id] && argument(id)) args.push_back(id);
    return std::make_pair(args, inside);
  };

  // Groups of roots, one per kernel, in execution order (each runs where its last member is).
  std::vector<std::vector<int>> groups;
  std::vector<std::vector<int>> group_args;
  auto fusible = [&](int id) {
    const Node& node = g.nodes[id];
    // A DGELU or RELU GEMM and what fused attention writes join nothing.
    if (node.type.rank() == 0 || is_materialized(node) || dgelu[id] || relu_epilogue[id] || writes_attention[id])
      return false;
    OpKind kind = op_def(node.op).kind;
    return kind == OpKind::elementwise || kind == OpKind::shape || kind == OpKind::random;
  };
  // The latest group for which may_join holds and whose members no kernel
  // after it reads (a joined group runs later, where its last member is); -1 if none.
  auto latest_group = [&](const std::function<bool(const std::vector<int>&, const std::vector<int>&)>& may_join) {
    std::vector<bool> read_later(n, false);
    for (int gi = static_cast<int>(groups.size()) - 1; gi >= 0; --gi) {
      bool ok = true;
      for (int m : groups[gi]) ok = ok && !read_later[m];
      if (ok && may_join(groups[gi], group_args[gi])) return gi;
      for (int a : group_args[gi]) read_later[a] = true;
    }
    return -1;
  };
  // The input or param X that a graph output "new.X" updates, per node; -1 for none.
  std::vector<int> overwrites(n, -1);
  for (const GraphOutput& o : g.outputs)
    if (o.name.rfind("new.", 0) == 0)
      if (int x = g.find(o.name.substr(4)); x >= 0 && g.nodes[x].is_leaf()) overwrites[o.node] = x;
  // Bytes a kernel over these members and arguments moves (each once).
  auto bytes_moved = [&](const std::vector<int>& members, const std::vector<int>& args) {
    double b = 0;
    for (int id : members) b += static_cast<double>(g.nodes[id].type.bytes());
    for (int id : args) b += static_cast<double>(g.nodes[id].type.bytes());
    return b;
  };
  // The arguments of groups[gi] with r joined, when r may join it early
  // (below): the group is led by a row-wise op of r's shape; r is a row
  // epilogue (the group's only one) that shares an argument with it, or r
  // reads a member; and each of r's arguments `args` is a leaf, a member,
  // or made by an earlier group.
  auto joins_row_group = [&](size_t gi, int r, const std::vector<int>& args) -> std::optional<std::vector<int>> {
    const std::vector<int>& members = groups[gi];
    const Node& lead = g.nodes[members[0]];
    if (!row_wise(lead) || !root[lead.id] || lead.type.shape != g.nodes[r].type.shape) return std::nullopt;
    auto in = [](const std::vector<int>& v, int x) { return std::find(v.begin(), v.end(), x) != v.end(); };
    bool related = false;
    for (int a : args) related = related || in(members, a) || (row_epilogue[r] && in(group_args[gi], a));
    if (!related) return std::nullopt;
    if (row_epilogue[r] && std::any_of(members.begin(), members.end(), [&](int m) { return row_epilogue[m]; }))
      return std::nullopt;
    for (int a : args) {
      const bool ready = g.nodes[a].op == "input" || g.nodes[a].op == "param" || in(members, a) ||
                         std::any_of(groups.begin(), groups.begin() + static_cast<std::ptrdiff_t>(gi),
                                     [&](const std::vector<int>& earlier) { return in(earlier, a); });
      if (!ready) return std::nullopt;
    }
    if (overwrites[r] >= 0 && in(group_args[gi], overwrites[r])) return std::nullopt;
    std::vector<int> joined = members;
    joined.push_back(r);
    std::vector<int> joined_args = arguments(joined).first;
    if (joined.size() + joined_args.size() > kMaxJoinedBuffers) return std::nullopt;
    return joined_args;
  };
  for (int r = 0; r < n; ++r) {
    if (!root[r]) continue;
    std::vector<int> args = arguments({r}).first;
    int join = -1;
    bool early = false;  // joined an earlier group, in place
    // r joins the first group (latest first, or earliest first) for which
    // `joins` gives the arguments with r joined, and runs where it runs.
    auto join_early = [&](bool latest_first,
                          const std::function<std::optional<std::vector<int>>(size_t)>& joins) {
      for (size_t i = 0; i < groups.size() && !early; ++i) {
        const size_t gi = latest_first ? groups.size() - 1 - i : i;
        if (std::optional<std::vector<int>> a = joins(gi)) {
          groups[gi].push_back(r);
          group_args[gi] = std::move(*a);
          early = true;
        }
      }
    };
    if (library_gemm && g.nodes[r].op == "attention_grad") {
      // The fused attention backward computes dq, dk and dv together: the
      // attention_grad nodes of one attention share a kernel.
      join = latest_group([&](const std::vector<int>& members, const std::vector<int>&) {
        return one_backward_call(g, g.nodes[members[0]], g.nodes[r]);
      });
    } else if (library_gemm && gemm_takes_gelu_epilogue(g, g.nodes[r])) {
      // cuBLASLt applies the gelu as the epilogue of the product it reads.
      const int product = g.nodes[r].inputs[0];
      join = latest_group([&](const std::vector<int>& members, const std::vector<int>&) {
        return members.size() == 1 && members[0] == product;
      });
    } else if (fusible(r)) {
      // The arguments of the kernel of `members` with r joined, or nothing
      // when r may not join: another shape, more than kMaxJoinedBuffers
      // buffers, or r an update "new.X" of an X the members read (computed
      // before them, as schedules compute outputs last to first, r could
      // not then be written over X: memory_plan.h).
      auto joined_args = [&](const std::vector<int>& members,
                             const std::vector<int>& member_args) -> std::optional<std::vector<int>> {
        if (!fusible(members[0]) || g.nodes[members[0]].type.shape != g.nodes[r].type.shape) return std::nullopt;
        // One row epilogue per kernel: its rows are the kernel's.
        if (row_epilogue[r] && std::any_of(members.begin(), members.end(), [&](int m) { return row_epilogue[m]; }))
          return std::nullopt;
        if (overwrites[r] >= 0 &&
            std::find(member_args.begin(), member_args.end(), overwrites[r]) != member_args.end())
          return std::nullopt;
        std::vector<int> joined = members;
        joined.push_back(r);
        std::vector<int> joined_args = arguments(joined).first;
        if (joined.size() + joined_args.size() > kMaxJoinedBuffers) return std::nullopt;
        return joined_args;
      };
      // A group related to r (sharing an argument or reading a member).
      join = latest_group([&](const std::vector<int>& members, const std::vector<int>& member_args) {
        for (int a : args)
          if (std::find(members.begin(), members.end(), a) != members.end() ||
              std::find(member_args.begin(), member_args.end(), a) != member_args.end())
            return joined_args(members, member_args).has_value();
        return false;
      });
      // The arguments of an unrelated group with r joined, when the joined
      // kernel still moves fewer bytes than the target moves in one kernel
      // launch (the updates of many small params: one launch instead of dozens).
      auto within_launch_budget = [&](const std::vector<int>& members,
                                      const std::vector<int>& member_args) -> std::optional<std::vector<int>> {
        std::optional<std::vector<int>> a = joined_args(members, member_args);
        if (!a) return std::nullopt;
        std::vector<int> joined = members;
        joined.push_back(r);
        if (cost->memory_us(bytes_moved(joined, *a)) >= cost->launch_us) return std::nullopt;
        return a;
      };
      // A row epilogue, or a reader of one, may instead join an earlier group
      // led by a row-wise op of its shape that it is related to (the layer
      // norm a norm's backward recomputes for its weight's gradient, read by
      // kernels before the norm's gradient is added to the residual's), and
      // run there when everything it reads is ready there: that kernel then
      // computes both ops' rows, and writes the recomputed norm besides.
      if (join < 0 && library_gemm)
        join_early(/*latest_first=*/true, [&](size_t gi) { return joins_row_group(gi, r, args); });
      if (join < 0 && !early && cost)
        join = latest_group([&](const std::vector<int>& members, const std::vector<int>& member_args) {
          return within_launch_budget(members, member_args).has_value();
        });
      // A node that reads only graph inputs and params (a param's cast to
      // bf16) may instead join the first earlier group within that budget and
      // run where that group runs: its inputs are ready from the start. The
      // casts of GPT-2's biases then take three launches instead of 48.
      const bool reads_only_leaves = std::all_of(args.begin(), args.end(), [&](int a) {
        return g.nodes[a].op == "input" || g.nodes[a].op == "param";
      });
      if (join < 0 && !early && cost && reads_only_leaves)
        join_early(/*latest_first=*/false, [&](size_t gi) { return within_launch_budget(groups[gi], group_args[gi]); });
      // Beyond that budget, a param's cast joins the first earlier group of
      // casts of params of its type (the bf16 copies of GPT-2's twelve
      // same-shaped weights of each kind): one kernel over all of them runs
      // near copy bandwidth where a dozen of 10-14 MB each pay a launch and a
      // ramp. They are then live from the start, as the backward's products
      // keep them live to its end anyway.
      auto param_cast = [&](int id) {
        const Node& node = g.nodes[id];
        return node.op == "cast" && node.inputs.size() == 1 && g.nodes[node.inputs[0]].op == "param";
      };
      if (join < 0 && !early && cost && param_cast(r))
        join_early(/*latest_first=*/false, [&](size_t gi) -> std::optional<std::vector<int>> {
          const std::vector<int>& members = groups[gi];
          const bool alike = g.nodes[members[0]].type == g.nodes[r].type &&
                             std::all_of(members.begin(), members.end(), param_cast);
          return alike ? joined_args(members, group_args[gi]) : std::nullopt;
        });
    }
    if (early) continue;
    if (join < 0) {
      groups.push_back({r});
      group_args.push_back(args);
      continue;
    }
    std::vector<int> members = groups[join];
    members.push_back(r);
    groups.erase(groups.begin() + join);
    group_args.erase(group_args.begin() + join);
    groups.push_back(members);
    group_args.push_back(arguments(members).first);
  }

  std::vector<Kernel> kernels;
  for (const std::vector<int>& members : groups) {
    auto [args, inside] = arguments(members);
    Kernel k;
    k.roots = members;
    k.graph.name = "kernel";
    std::map<int, int> local;  // full id -> kernel id
    auto add = [&](Node node) {
      node.id = static_cast<int>(k.graph.nodes.size());
      k.graph.nodes.push_back(std::move(node));
      return k.graph.nodes.back().id;
    };
    // Arguments first (graph inputs, params and other kernels' results), then the computation.
    for (int id : args) {
      Node arg;
      arg.name = "in" + std::to_string(k.inputs.size());
      arg.op = "input";
      arg.type = g.nodes[id].type;
      local[id] = add(std::move(arg));
      k.inputs.push_back(id);
    }
    std::map<int, std::string> out_name;
    for (size_t i = 0; i < members.size(); ++i)
      out_name[members[i]] = members.size() == 1 ? "out" : "out" + std::to_string(i);
    int counter = 0;
    for (int id = 0; id <= members.back(); ++id) {
      if (!inside[id] || local.count(id)) continue;
      Node node = g.nodes[id];
      // A remat clone computes exactly what its original does
      // (include/tessera/remat.h): the same kernel, compiled once.
      node.attrs.erase("remat");
      node.name = out_name.count(id) ? out_name[id] : "k" + std::to_string(counter++);
      for (int& in : node.inputs) in = local.at(in);
      local[id] = add(std::move(node));
    }
    for (int r : members) k.graph.outputs.push_back({out_name[r], local.at(r)});
    kernels.push_back(std::move(k));
  }
  return kernels;
}

std::string kernel_name(const Graph& g, const std::vector<int>& roots) {
  std::string names, ops;
  for (int r : roots) {
    names += (names.empty() ? "" : "+") + g.nodes[r].name;
    ops += (ops.empty() ? "" : ", ") + g.nodes[r].op;
  }
  return names + " (" + ops + ")";
}

std::string describe_kernel(const Graph& g, const std::vector<int>& roots) {
  const Node& n = g.nodes[roots[0]];
  std::string what = roots.size() > 1 ? "nodes " + kernel_name(g, roots) : "node '" + n.name + "' (" + n.op + ")";
  return what + " of graph '" + g.name + "'";
}

}  // namespace tessera
