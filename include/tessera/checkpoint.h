// Training checkpoints: a Trainer's params, optimizer state and step counter
// in one safetensors file, so that training resumes bit-identically.
//
// The file is a plain safetensors file (safetensors.h): each param X is the
// tensor "params/X", each optimizer state tensor S (e.g. "fc.weight.exp_avg")
// is "optim_state/S", and "__metadata__" holds
//   "format"          "tessera.checkpoint.v1"
//   "steps_done"      the Trainer's steps_done(), in decimal
//   "lr"              the current lr, as a C99 hex float (exact)
//   "last_grad_norm"  last_grad_norm(), as a C99 hex float
// Saving is atomic (a temporary file renamed over `path`): an existing
// checkpoint is replaced whole or not at all.
//
// Loading needs a Trainer built from the same graph and optimizer: it checks
// that the file holds exactly this Trainer's params and state, with the same
// dtypes and shapes, before changing anything. A missing, corrupt or
// mismatched file throws Error (naming the file and the tensor or field at
// fault) and leaves the Trainer untouched. The graph, the optimizer's
// hyperparameters other than lr, and the TrainerOptions are not saved.
#pragma once

#include <string>

#include "tessera/trainer.h"

namespace tessera {

inline const char* const kCheckpointFormat = "tessera.checkpoint.v1";

void save_checkpoint(const Trainer& trainer, const std::string& path);
void load_checkpoint(Trainer& trainer, const std::string& path);

// The same file for a training state held outside a Trainer (a generated
// step's, downloaded from a GPU), so that either kind of run resumes the
// other's checkpoints. read_checkpoint checks the file only; the caller
// checks the state against its step (check_training_state, trainer.h).
void save_checkpoint(const TrainingState& state, const std::string& path);
TrainingState read_checkpoint(const std::string& path);

}  // namespace tessera
