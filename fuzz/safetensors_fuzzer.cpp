// libFuzzer target for the safetensors reader (safetensors.h).
//
// Each input is taken as a whole file. The reader must either reject it with
// tessera::Error or accept it; anything else (a crash, a sanitizer report,
// another exception type escaping) is a bug. An accepted file is copied
// into Buffers (touching every tensor byte), written again and re-read, and
// the second read must give the same names, types, bytes and metadata.
// Built and run by scripts/fuzz.sh (clang, outside the CMake build); the
// mmap path (SafetensorsFile::open) shares the validation but is not fuzzed.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tessera/error.h"
#include "tessera/safetensors.h"

namespace {

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "safetensors_fuzzer: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tessera;
  SafetensorsFile file;
  try {
    file = SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz-input");
  } catch (const Error&) {
    return 0;  // rejected: fine
  }
  std::string again;
  try {
    again = serialize_safetensors(file.to_buffers(), file.metadata());
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    bug("an accepted file could not be written again");
  }
  SafetensorsFile reread;
  try {
    reread = SafetensorsFile::from_bytes(again, "rewritten");
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    bug("the writer's output was rejected by the reader");
  }
  if (reread.metadata() != file.metadata()) bug("metadata changed in the round trip");
  if (reread.tensors().size() != file.tensors().size()) bug("tensor count changed in the round trip");
  for (const SafetensorsTensorView& t : file.tensors()) {
    const SafetensorsTensorView& u = reread.tensor(t.name);
    if (u.type() != t.type() || u.bytes != t.bytes || std::memcmp(u.data, t.data, t.bytes) != 0)
      bug("a tensor changed in the round trip");
  }
  return 0;
}
