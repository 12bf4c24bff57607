// Tessera's user API in one include: build graphs, transform them, run them.
#pragma once

#include "tessera/autodiff.h"
#include "tessera/builder.h"
#include "tessera/dtype.h"
#include "tessera/error.h"
#include "tessera/graph.h"
#include "tessera/ops.h"
#include "tessera/optimizer.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"
#include "tessera/text.h"
#include "tessera/trainer.h"
