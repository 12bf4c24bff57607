// The training steps tessera-finetune runs on the CPU without compiling
// anything at start-up: the generated (ahead-of-time) libraries of
// apps/CMakeLists.txt, built in every configuration for the default preset
// (cpu) with the default --lora-* flags: the pretraining step
// (gpt_train_step), the QLoRA step (gpt_qlora_train_step) and the QLoRA
// model's evaluation graph (gpt_qlora: logits, no dropout), each with the
// CPU variants listed there (host: the build machine's CPU features;
// x86-64-linux-sse41: any x86-64 CPU with SSE4.1). The variant is picked
// when a step is created: the first this CPU runs, or the one
// TESSERA_AOT_VARIANT names.
//
// CpuStep hides the generated classes behind one interface: tensors by name
// (step_tensors.h) and one run over caller-owned host arrays.
//
// This file does not decide between a generated step and the JIT
// (finetune_model.cpp does), own the training state
// (generated_cpu_backend.cpp does) or compare settings (generated_configs.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "generated_configs.h"
#include "step_tensors.h"

namespace finetune {

struct RunConfig;

// The configurations this build has CPU steps for, and their variants in the
// order they are tried ("host", "x86-64-linux-sse41").
std::vector<GeneratedConfig> generated_cpu_configs();
std::vector<std::string> generated_cpu_variants();

// Empty when this build has a generated CPU step of `kind` for `rc` (its
// model and batch; for qlora also its LoRA settings); else a message naming
// the preset or flag that differs and what the CPU steps support.
std::string cpu_step_mismatch(StepKind kind, const RunConfig& rc);

class CpuStep {
 public:
  // The generated step of `kind` for `rc`, or, with `eval`, the QLoRA
  // model's evaluation graph for it (kind must be qlora). nullptr when there
  // is none (cpu_step_mismatch) or none of its variants runs on this CPU;
  // *why then says which. With TESSERA_AOT_VARIANT set to one of
  // generated_cpu_variants() only that variant is tried; set to another
  // name it throws tessera::Error listing the variants.
  static std::unique_ptr<CpuStep> create(StepKind kind, const RunConfig& rc, std::string* why, bool eval = false);
  virtual ~CpuStep() = default;

  virtual std::string name() const = 0;     // the generated library, e.g. "finetune_qlora_cpu"
  virtual std::string variant() const = 0;  // "host" or "x86-64-linux-sse41"
  virtual const StepTensors& tensors() const = 0;
  // The input that output `output` (its position) may be written over: an
  // optimizer's new.X over X, where the memory plan allows it (run() may
  // then be given one array for both); "" for none.
  virtual std::string in_place_of(int output) const = 0;
  // Runs once: `inputs` and `outputs` hold one host array per tensor, in
  // tensors() order, of its type's size. Outputs must not overlap inputs
  // except as in_place_of() allows. Throws tessera::Error naming the step
  // and the kernel that failed.
  virtual void run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs) = 0;
};

}  // namespace finetune
