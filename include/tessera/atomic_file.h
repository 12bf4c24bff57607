// Atomic file replacement: write a temporary file next to the target, fsync
// it, rename it over the target, fsync the directory. Used for safetensors
// files, checkpoints, adapters and the apps' outputs.
//
// Either the whole new content is at `path` or the old file (or no file) is
// left exactly as it was; the temporary file is removed on every failure.
// Failures throw tessera::Error naming the path and the system's reason.
// Does not lock: two concurrent writers of one path each replace it whole,
// the last rename wins.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace tessera {

struct ByteSpan {
  const void* data = nullptr;
  size_t size = 0;
};

// Writes the concatenation of `pieces` to `path` atomically. The new file
// gets mode 0666 minus the umask (as a plain open() would).
void write_file_atomically(const std::string& path, const std::vector<ByteSpan>& pieces);
inline void write_file_atomically(const std::string& path, const std::string& bytes) {
  write_file_atomically(path, {ByteSpan{bytes.data(), bytes.size()}});
}

}  // namespace tessera
