// save_checkpoint / load_checkpoint / read_checkpoint (checkpoint.h): a
// TrainingState, a Trainer's or one held elsewhere, to and from a
// safetensors file. The file format itself is safetensors.cpp's; the Trainer
// checks what it is given (Trainer::restore).
#include "tessera/checkpoint.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include "tessera/error.h"
#include "tessera/safetensors.h"

namespace tessera {
namespace {

const char* const kParamPrefix = "params/";
const char* const kStatePrefix = "optim_state/";

std::string hex_double(double v) {
  char s[64];
  std::snprintf(s, sizeof s, "%a", v);
  return s;
}

const std::string& field(const std::string& path, const std::map<std::string, std::string>& m, const char* key) {
  auto it = m.find(key);
  if (it == m.end()) fail("checkpoint '", path, "': the metadata has no \"", key, "\"");
  return it->second;
}

double parse_double(const std::string& path, const char* key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno == ERANGE)
    fail("checkpoint '", path, "': metadata \"", key, "\" = \"", text, "\" is not a number");
  return v;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

namespace {

void write_checkpoint(const std::map<std::string, Buffer>& params, const std::map<std::string, Buffer>& state,
                      int64_t steps_done, double lr, double last_grad_norm, const std::string& path) {
  std::map<std::string, Buffer> tensors;
  for (const auto& [name, b] : params) tensors[kParamPrefix + name] = b;
  for (const auto& [name, b] : state) tensors[kStatePrefix + name] = b;
  const std::map<std::string, std::string> metadata = {
      {"format", kCheckpointFormat},
      {"steps_done", std::to_string(steps_done)},
      {"lr", hex_double(lr)},
      {"last_grad_norm", hex_double(last_grad_norm)},
  };
  save_safetensors(path, tensors, metadata);
}

}  // namespace

void save_checkpoint(const Trainer& trainer, const std::string& path) {
  write_checkpoint(trainer.params(), trainer.state(), trainer.steps_done(), trainer.lr(), trainer.last_grad_norm(),
                   path);
}

void save_checkpoint(const TrainingState& s, const std::string& path) {
  write_checkpoint(s.params, s.state, s.steps_done, s.lr, s.last_grad_norm, path);
}

TrainingState read_checkpoint(const std::string& path) {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Buffer> tensors;
  try {
    tensors = load_safetensors(path, &metadata);
  } catch (const Error& e) {
    fail("checkpoint '", path, "': ", e.what());
  }
  auto format = metadata.find("format");
  if (format == metadata.end() || format->second != kCheckpointFormat)
    fail("checkpoint '", path, "': not a tessera checkpoint (metadata \"format\" is ",
         format == metadata.end() ? std::string("missing") : "\"" + format->second + "\"", ", expected \"",
         kCheckpointFormat, "\")");
  TrainingState s;
  const std::string& steps = field(path, metadata, "steps_done");
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(steps.c_str(), &end, 10);
  if (steps.empty() || *end != '\0' || errno == ERANGE || n < 0)
    fail("checkpoint '", path, "': metadata \"steps_done\" = \"", steps, "\" is not a step count");
  s.steps_done = n;
  s.lr = parse_double(path, "lr", field(path, metadata, "lr"));
  s.last_grad_norm = parse_double(path, "last_grad_norm", field(path, metadata, "last_grad_norm"));
  for (auto& [name, b] : tensors) {
    if (starts_with(name, kParamPrefix)) s.params[name.substr(std::string(kParamPrefix).size())] = std::move(b);
    else if (starts_with(name, kStatePrefix)) s.state[name.substr(std::string(kStatePrefix).size())] = std::move(b);
    else fail("checkpoint '", path, "': tensor '", name, "' is neither \"", kParamPrefix, "...\" nor \"", kStatePrefix, "...\"");
  }
  return s;
}

void load_checkpoint(Trainer& trainer, const std::string& path) {
  TrainingState s = read_checkpoint(path);
  try {
    trainer.restore(std::move(s));
  } catch (const Error& e) {
    fail("checkpoint '", path, "' does not match this trainer: ", e.what());
  }
}

}  // namespace tessera
