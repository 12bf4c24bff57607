// A generated step's host training state: its start and its checked
// checkpoints (generated_state.h). Runs no step.
#include "generated_state.h"

#include <tessera/checkpoint.h>
#include <tessera/error.h>
#include <tessera/optimizer.h>

#include <set>
#include <variant>

using namespace tessera;

namespace finetune {

GeneratedState initial_generated_state(const std::string& who, const std::vector<StepTensor>& inputs,
                                       const Graph& joint, const TrainerOptions& options) {
  GeneratedState g;
  TrainingState& s = g.state;
  s.params = initial_params(joint, options);
  s.lr = std::visit([](const auto& o) { return o.lr; }, options.optimizer);
  std::set<std::string> batch_inputs;
  for (int id : joint.inputs()) batch_inputs.insert(joint.nodes[id].name);
  std::set<std::string> seen;
  for (const StepTensor& t : inputs) {
    if (t.name == kOptimStep || t.name == kOptimLr || batch_inputs.count(t.name)) continue;
    seen.insert(t.name);
    auto p = s.params.find(t.name);
    if (p != s.params.end()) {
      if (p->second.type() != t.type)
        fail(who, ": param '", t.name, "' is ", to_string(t.type), " there, ", to_string(p->second.type()),
             " in this run's model");
      if (t.fed_back) g.trained.push_back(t.name);
      continue;
    }
    if (!t.fed_back)
      fail(who, ": input '", t.name,
           "' is neither a param of this run's model, an optimizer state tensor nor a batch input");
    s.state[t.name] = Buffer(t.type.dtype, t.type.shape);  // AdamW's moments start at 0
  }
  for (const auto& [name, b] : s.params)
    if (!seen.count(name)) fail(who, " has no input for the param '", name, "'");
  return g;
}

TrainingState read_matching_checkpoint(const std::string& path, const TrainingState& current, const std::string& who) {
  TrainingState loaded = read_checkpoint(path);
  try {
    check_training_state(current, loaded, who);
  } catch (const Error& e) {
    fail("checkpoint '", path, "' does not match this run: ", e.what());
  }
  return loaded;
}

}  // namespace finetune
