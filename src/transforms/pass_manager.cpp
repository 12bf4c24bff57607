// PassManager: runs passes in order, verifying the graph after each.
//
// Each run verifies its input, then for every pass: runs it, times it (wall
// seconds), records the node counts before and after, and verifies the result,
// throwing tessera::Error that names the pass (and its position) when the
// pass throws or its output fails verification. When the environment variable
// TESSERA_DUMP names a folder, the folder is created if needed and the input
// and each pass's output are written there as "00-input.txt",
// "01-<pass>.txt", ... holding print(graph) (text.h); a pass's output is
// written before it is verified, so a broken graph can be read. This file
// defines no pass.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/text.h"

namespace tessera {

namespace {

// A pass name made safe for a file name.
std::string file_part(const std::string& name) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_';
  return s.empty() ? "pass" : s;
}

void dump(const std::string& folder, size_t index, const std::string& what, const Graph& g) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) fail("TESSERA_DUMP: cannot create folder '", folder, "': ", ec.message());
  char prefix[16];
  std::snprintf(prefix, sizeof prefix, "%02zu-", index);
  fs::path path = fs::path(folder) / (prefix + file_part(what) + ".txt");
  std::ofstream out(path);
  out << print(g);
  out.close();
  if (!out) fail("TESSERA_DUMP: cannot write '", path.string(), "'");
}

}  // namespace

Graph PassManager::run(const Graph& input) {
  records_.clear();
  const char* env = std::getenv("TESSERA_DUMP");
  const std::string folder = env ? env : "";
  if (!folder.empty()) dump(folder, 0, "input", input);
  try {
    verify(input, {true});
  } catch (const Error& e) {
    fail("PassManager: the input graph failed verification before any pass ran: ", e.what());
  }
  Graph g = input;
  for (size_t i = 0; i < passes_.size(); ++i) {
    const Pass& pass = passes_[i];
    const std::string where =
        "pass '" + pass.name + "' (" + std::to_string(i + 1) + " of " + std::to_string(passes_.size()) + ")";
    if (!pass.run) fail("PassManager: ", where, " has no function");
    PassRecord rec;
    rec.name = pass.name;
    rec.nodes_before = g.nodes.size();
    auto start = std::chrono::steady_clock::now();
    Graph next;
    try {
      next = pass.run(g);
    } catch (const Error& e) {
      fail("PassManager: ", where, " failed: ", e.what());
    }
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rec.nodes_after = next.nodes.size();
    records_.push_back(rec);
    if (!folder.empty()) dump(folder, i + 1, pass.name, next);
    try {
      verify(next, {true});
    } catch (const Error& e) {
      fail("PassManager: ", where, " produced an invalid graph: ", e.what());
    }
    g = std::move(next);
  }
  return g;
}

std::string PassManager::report() const {
  size_t width = 4;
  for (const PassRecord& r : records_) width = std::max(width, r.name.size());
  std::ostringstream os;
  os << std::left << std::setw(static_cast<int>(width)) << "pass" << "  " << std::right << std::setw(10) << "ms"
     << "  " << std::setw(8) << "before" << "  " << std::setw(8) << "after" << "\n";
  double total = 0;
  for (const PassRecord& r : records_) {
    total += r.seconds;
    os << std::left << std::setw(static_cast<int>(width)) << r.name << "  " << std::right << std::setw(10)
       << std::fixed << std::setprecision(3) << r.seconds * 1e3 << "  " << std::setw(8) << r.nodes_before << "  "
       << std::setw(8) << r.nodes_after << "\n";
  }
  os << std::left << std::setw(static_cast<int>(width)) << "total" << "  " << std::right << std::setw(10)
     << std::fixed << std::setprecision(3) << total * 1e3;
  if (!records_.empty())
    os << "  " << std::setw(8) << records_.front().nodes_before << "  " << std::setw(8) << records_.back().nodes_after;
  os << "\n";
  return os.str();
}

}  // namespace tessera
