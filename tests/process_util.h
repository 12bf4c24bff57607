// For tests that run a program as a separate process (the apps): run a shell
// command with its stdout and stderr captured in files, and read files back.
// Header-only; nothing here is under test.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tessera::test_util {

struct ProcessResult {
  int status = -1;  // the exit status, or -1 if the process did not exit normally
  std::string out, err;
};

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs `command` (a shell command line) with stdout and stderr redirected to
// files in `scratch`, which must exist.
inline ProcessResult run_process(const std::string& command, const std::filesystem::path& scratch) {
  const std::filesystem::path out = scratch / "stdout", err = scratch / "stderr";
  const int s = std::system((command + " > " + out.string() + " 2> " + err.string()).c_str());
  ProcessResult r;
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace tessera::test_util
