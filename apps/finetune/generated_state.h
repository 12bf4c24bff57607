// The training state of a generated (ahead-of-time) step, held on the host
// as a tessera::TrainingState (trainer.h), for the backends that run one
// (generated_cpu_backend.cpp, gpu_backend.cpp):
//
//   - it starts where a Trainer built from the same joint graph and
//     TrainerOptions would (initial_params: same params for the same seed;
//     lr from the optimizer options; optimizer moments at 0), after checking
//     that the step's inputs are exactly the joint graph's params, its batch
//     inputs, optim.step / optim.lr, and fed-back optimizer state;
//   - a checkpoint (checkpoint.h's file, so a Trainer's and a generated
//     step's resume each other) is read and checked against it, all or nothing.
//
// It does not run the step, move tensors to or from a device, or save files.
#pragma once

#include <tessera/graph.h>
#include <tessera/trainer.h>

#include <string>
#include <vector>

#include "step_tensors.h"

namespace finetune {

struct GeneratedState {
  tessera::TrainingState state;
  std::vector<std::string> trained;  // params the step updates (inputs X it outputs new.X for)
};

// `who` starts every error message ("GPU step finetune_qlora_tiny"). Throws
// tessera::Error when an input of the step is neither a param of `joint`, a
// batch input, optim.step / optim.lr nor fed back (optimizer state), when a
// param's type differs, or when the step has no input for a param.
GeneratedState initial_generated_state(const std::string& who, const std::vector<StepTensor>& inputs,
                                       const tessera::Graph& joint, const tessera::TrainerOptions& options);

// The checkpoint at `path` (read_checkpoint) once it holds exactly the
// tensors of `current`; else Error naming the file and the tensor.
tessera::TrainingState read_matching_checkpoint(const std::string& path, const tessera::TrainingState& current,
                                                const std::string& who);

}  // namespace finetune
