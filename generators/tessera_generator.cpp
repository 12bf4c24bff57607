// tessera_generator: the build-time driver behind tessera_add_generator().
// Builds a registered model (models.h: registered_model), compiles it ahead
// of time for each target (src/schedules/aot.h) and writes a header, a
// runner source and objects that need no libHalide to run. It prints what it
// compiled and how long it took. It does not build the library; CMake does.
//
//   tessera_generator --model mlp_train_step --name mlp_step --out DIR
//                     --targets host,host-cuda-sm80,host-cuda-sm90 [--param sizes=784,256,10 ...]
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "aot.h"

namespace {

int usage(const char* why) {
  std::fprintf(stderr,
               "tessera_generator: %s\n"
               "usage: tessera_generator --model MODEL --name NAME --out DIR --targets T1[,T2...] [--param KEY=VALUE]...\n"
               "  models:",
               why);
  for (const std::string& m : tessera::registered_models()) std::fprintf(stderr, " %s", m.c_str());
  std::fprintf(stderr, "\n  targets: host, host-cuda-sm80, host-cuda-sm90, or a Halide CPU target string\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, name, out;
  std::vector<std::string> targets;
  std::map<std::string, std::string> params;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return usage(("'" + a + "' needs a value").c_str());
    std::string value = argv[++i];
    if (a == "--model") model = value;
    else if (a == "--name") name = value;
    else if (a == "--out") out = value;
    else if (a == "--targets") {
      std::stringstream ss(value);
      for (std::string t; std::getline(ss, t, ',');)
        if (!t.empty()) targets.push_back(t);
    } else if (a == "--param") {
      size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) return usage(("--param '" + value + "' is not KEY=VALUE").c_str());
      params[value.substr(0, eq)] = value.substr(eq + 1);
    } else {
      return usage(("unknown option '" + a + "'").c_str());
    }
  }
  if (model.empty() || name.empty() || out.empty() || targets.empty())
    return usage("--model, --name, --out and --targets are required");
  try {
    tessera::Graph g = tessera::registered_model(model, params);
    std::string origin = "model '" + model + "'";
    for (const auto& [k, v] : params) origin += " " + k + "=" + v;
    tessera::AotResult r = tessera::compile_aot(g, name, targets, out, origin);
    std::printf("tessera_generator: %s (%s): %d kernels, arena %zu bytes, %.1f s\n", name.c_str(), origin.c_str(),
                r.kernels, r.arena_bytes, r.seconds);
    for (const tessera::AotVariant& v : r.variants) std::printf("  %-20s %.1f s  %s\n", v.target.c_str(), v.seconds, v.object.c_str());
    if (std::getenv("TESSERA_GENERATOR_VERBOSE"))
      for (const tessera::AotVariant& v : r.variants) std::printf("%s:\n%s", v.target.c_str(), v.schedule.c_str());
  } catch (const tessera::Error& e) {
    std::fprintf(stderr, "tessera_generator: %s\n", e.what());
    return 1;
  }
  return 0;
}
