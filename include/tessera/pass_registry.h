// Passes by name, for tools and scripts: "cse", "autodiff", "adamw=1e-3".
//
// A pass spec is a registered name, optionally followed by "=" and one
// argument whose meaning the pass states in its help line (a loss name, a
// learning rate, a dtype, a budget). A pipeline is specs separated by commas:
// "autodiff,adamw=0.01,cse,dce". apps/opt (tessera-opt) is the main user.
// This header builds passes; it does not run them (passes.h's PassManager does).
#pragma once

#include <string>
#include <vector>

#include "tessera/passes.h"

namespace tessera {

struct PassInfo {
  std::string name;
  std::string argument;  // what "=ARG" means, e.g. "LR (default 1e-3)"; empty: takes none
  std::string help;      // one line
};

// Every registered pass, in the order `tessera-opt --list-passes` prints them.
const std::vector<PassInfo>& registered_passes();

// Builds the pass a spec names. Throws Error naming the spec: an unknown name
// (listing the known ones), an argument to a pass that takes none, or an
// argument the pass cannot read.
Pass make_pass(const std::string& spec);

// Splits a comma-separated pipeline and builds each pass (errors as make_pass,
// prefixed with the spec's position). Empty entries are an error.
std::vector<Pass> make_pipeline(const std::string& specs);

}  // namespace tessera
