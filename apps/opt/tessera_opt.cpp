// tessera-opt: reads a graph in Tessera's text form, runs a list of passes
// over it and prints the result, like mlir-opt. Optionally prints the plan
// (kernels and schedules) for a target and the memory report.
//
//   tessera-opt --passes=autodiff,adamw,cse,dce --print-plan --target=host model.tsr
//
// It only reads and transforms graphs; it trains and runs nothing.
#include <tessera/atomic_file.h>
#include <tessera/models.h>
#include <tessera/pass_registry.h>
#include <tessera/plan.h>
#include <tessera/tessera.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

using namespace tessera;

namespace {

const char* kUsage =
    "usage: tessera-opt [options] [FILE]\n"
    "\n"
    "Reads a graph in Tessera's text form from FILE (or stdin when FILE is '-' or\n"
    "absent), runs the passes given by --passes in order (verifying the graph\n"
    "after each), and prints the resulting graph.\n"
    "\n"
    "options:\n"
    "  --model=NAME      start from a registered model instead of a file\n"
    "                    (mlp, gpt, mlp_train_step, gpt_train_step,\n"
    "                    gpt_qlora_train_step, op_zoo)\n"
    "  --param=K=V       a parameter of --model (repeatable), e.g. --param=n_layer=2\n"
    "  --passes=LIST     comma-separated passes, each NAME or NAME=ARG, e.g.\n"
    "                    --passes=autodiff,adamw=0.01,cse,dce (see --list-passes)\n"
    "  --list-passes     print every pass, its argument and what it does, and exit\n"
    "  --target=T        the target of --print-plan/--print-memory: host (default),\n"
    "                    host-cuda-sm80, host-cuda-sm90 (CUDA targets compile PTX;\n"
    "                    no GPU needed)\n"
    "  --print-plan      after the graph, print the kernels and each node's schedule\n"
    "  --print-memory    after the graph, print the memory plan and its peak bytes\n"
    "  --timing          print each pass's time and node counts to stderr\n"
    "  --dot             print the graph as Graphviz dot instead of text\n"
    "  --no-graph        do not print the graph (only the plan or memory report)\n"
    "  -o FILE           write the graph to FILE (replaced atomically) instead of stdout\n"
    "  -h, --help        print this help and exit\n"
    "\n"
    "exit status: 0 on success, 1 on an error in the input or a pass, 2 on bad usage\n";

struct Options {
  std::string input = "-";
  std::string output;
  std::string passes;
  std::string target = "host";
  std::string model;
  std::map<std::string, std::string> params;
  bool print_plan = false, print_memory = false, timing = false, dot = false, graph = true;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "--name=value" -> value, when `arg` starts with "--name=".
bool value_of(const std::string& arg, const std::string& name, std::string& value) {
  const std::string prefix = name + "=";
  if (arg.compare(0, prefix.size(), prefix) != 0) return false;
  value = arg.substr(prefix.size());
  if (value.empty()) throw UsageError(name + " needs a value (" + name + "=...)");
  return true;
}

Options parse_args(int argc, char** argv, bool& exit_now) {
  Options o;
  bool have_input = false;
  exit_now = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string v;
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      exit_now = true;
      return o;
    } else if (a == "--list-passes") {
      for (const PassInfo& p : registered_passes())
        std::cout << "  " << p.name << (p.argument.empty() ? "" : "=" + p.argument) << "\n      " << p.help << "\n";
      exit_now = true;
      return o;
    } else if (value_of(a, "--passes", v)) {
      o.passes = v;
    } else if (value_of(a, "--model", v)) {
      o.model = v;
    } else if (value_of(a, "--param", v)) {
      const size_t eq = v.find('=');
      if (eq == 0 || eq == std::string::npos || eq + 1 == v.size())
        throw UsageError("--param needs KEY=VALUE, got '" + v + "'");
      o.params[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (value_of(a, "--target", v)) {
      o.target = v;
    } else if (a == "--print-plan") {
      o.print_plan = true;
    } else if (a == "--print-memory") {
      o.print_memory = true;
    } else if (a == "--timing") {
      o.timing = true;
    } else if (a == "--dot") {
      o.dot = true;
    } else if (a == "--no-graph") {
      o.graph = false;
    } else if (a == "-o") {
      if (i + 1 >= argc) throw UsageError("-o needs a file name");
      o.output = argv[++i];
    } else if (a.size() > 1 && a[0] == '-') {
      throw UsageError("unknown option '" + a + "' (see --help)");
    } else {
      if (have_input) throw UsageError("more than one input file ('" + o.input + "' and '" + a + "')");
      o.input = a;
      have_input = true;
    }
  }
  if (have_input && !o.model.empty()) throw UsageError("give either a FILE or --model, not both");
  if (!o.params.empty() && o.model.empty()) throw UsageError("--param needs --model");
  return o;
}

std::string read_input(const std::string& path) {
  std::ostringstream s;
  if (path == "-") {
    s << std::cin.rdbuf();
    return s.str();
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "': " + std::strerror(errno));
  s << f.rdbuf();
  return s.str();
}

int run(const Options& o) {
  const Target target = Target::parse(o.target);
  const std::string where = o.input == "-" ? "<stdin>" : o.input;
  Graph g;
  if (!o.model.empty()) {
    g = registered_model(o.model, o.params);
  } else {
    try {
      g = parse(read_input(o.input));
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
  PassManager pm;
  if (!o.passes.empty())
    for (Pass& p : make_pipeline(o.passes)) pm.add(std::move(p));
  const Graph result = pm.run(g);
  if (o.timing) std::cerr << pm.report();

  std::ostringstream out;
  if (o.graph) out << (o.dot ? to_dot(result) : print(result));
  if (o.print_plan || o.print_memory) {
    const PlanReport plan = plan_report(result, target);
    if (o.print_plan) out << "\n# plan for " << target.str() << "\n" << plan.kernels;
    if (o.print_memory)
      out << "\n# memory for " << target.str() << ": peak " << plan.peak_bytes << " bytes (" << plan.without_reuse
          << " without reuse)\n"
          << plan.memory;
  }
  if (o.output.empty())
    std::cout << out.str();
  else
    write_file_atomically(o.output, out.str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    bool exit_now = false;
    o = parse_args(argc, argv, exit_now);
    if (exit_now) return 0;
  } catch (const UsageError& e) {
    std::cerr << "tessera-opt: " << e.what() << "\n";
    return 2;
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "tessera-opt: error: " << e.what() << "\n";
    return 1;
  }
}
