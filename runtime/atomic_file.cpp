// write_file_atomically (atomic_file.h): temporary file, fsync, rename.
#include "tessera/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include "tessera/error.h"

namespace tessera {
namespace {

std::string reason(int err) { return std::strerror(err); }

// Closes the descriptor and removes the temporary file unless released.
struct TempFile {
  int fd = -1;
  std::string path;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_file_atomically(const std::string& path, const std::vector<ByteSpan>& pieces) {
  if (path.empty() || path.back() == '/') fail("write '", path, "': not a file path");
  const std::string dir = directory_of(path);
  const std::string base = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);

  static std::atomic<uint64_t> counter{0};
  TempFile tmp;
  std::random_device entropy;
  for (int attempt = 0; tmp.fd < 0; ++attempt) {
    const std::string name = dir + "/." + base + ".tmp." + std::to_string(::getpid()) + "." +
                             std::to_string(counter++) + "." + std::to_string(entropy() % 1000000);
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      tmp.fd = fd;
      tmp.path = name;
    } else if (errno != EEXIST || attempt > 100) {
      fail("write '", path, "': cannot create a temporary file in '", dir, "': ", reason(errno));
    }
  }

  size_t written = 0;
  for (const ByteSpan& piece : pieces) {
    const char* p = static_cast<const char*>(piece.data);
    size_t left = piece.size;
    while (left > 0) {
      const ssize_t n = ::write(tmp.fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        fail("write '", path, "': writing the temporary file '", tmp.path, "' failed after ", written, " bytes: ",
             n < 0 ? reason(errno) : std::string("no progress"));
      p += n;
      left -= static_cast<size_t>(n);
      written += static_cast<size_t>(n);
    }
  }
  if (::fsync(tmp.fd) != 0) fail("write '", path, "': fsync of '", tmp.path, "' failed: ", reason(errno));
  const int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) fail("write '", path, "': closing '", tmp.path, "' failed: ", reason(errno));
  if (::rename(tmp.path.c_str(), path.c_str()) != 0)
    fail("write '", path, "': renaming '", tmp.path, "' over it failed: ", reason(errno));
  tmp.keep = true;
  // Make the rename itself durable. The new file is in place already, so a
  // failure here is not reported (there is nothing to undo).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace tessera
