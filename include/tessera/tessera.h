// Tessera's user API in one include: build graphs, transform them, run them,
// and read and write their weights. (schedule.h, which exposes Halide, and
// the CUDA runtime headers under tessera/cuda/ are included separately.)
#pragma once

#include "tessera/autocast.h"
#include "tessera/autodiff.h"
#include "tessera/builder.h"
#include "tessera/checkpoint.h"
#include "tessera/dtype.h"
#include "tessera/error.h"
#include "tessera/graph.h"
#include "tessera/lora.h"
#include "tessera/models.h"
#include "tessera/ops.h"
#include "tessera/optimizer.h"
#include "tessera/pass_registry.h"
#include "tessera/passes.h"
#include "tessera/peft.h"
#include "tessera/plan.h"
#include "tessera/quant_ops.h"
#include "tessera/quantize.h"
#include "tessera/remat.h"
#include "tessera/runtime.h"
#include "tessera/safetensors.h"
#include "tessera/text.h"
#include "tessera/trainer.h"
