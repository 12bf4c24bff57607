// The demo's vocabulary, corpus reader and random windows (text_data.h).
#include "text_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tessera/error.h"

namespace finetune {

int encode_char(char c) {
  if (c == '\n') return 0;
  if (c >= ' ' && c <= '~') return c - ' ' + 1;
  return 1;  // ' '
}

char decode_id(int id) {
  if (id <= 0 || id >= kVocabSize) return '\n';
  return static_cast<char>(' ' + id - 1);
}

std::vector<int32_t> encode(const std::string& text) {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = encode_char(text[i]);
  return ids;
}

std::string decode(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += decode_id(id);
  return s;
}

std::string read_corpus(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".txt") files.push_back(e.path());
  if (ec) throw tessera::Error("corpus folder '" + dir + "': " + ec.message());
  if (files.empty()) throw tessera::Error("corpus folder '" + dir + "' has no .txt files");
  std::sort(files.begin(), files.end());
  std::string text;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    text += s.str();
  }
  return text;
}

uint64_t Rng::next() {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int64_t Rng::below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

Batch corpus_batch(const std::vector<int32_t>& data, int64_t batch, int64_t T, Rng& rng) {
  if (static_cast<int64_t>(data.size()) < T + 2)
    throw tessera::Error("corpus: " + std::to_string(data.size()) + " tokens, fewer than a window of " +
                         std::to_string(T + 1));
  Batch b;
  b.inputs.resize(batch * T);
  b.targets.resize(batch * T);
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t o = rng.below(static_cast<int64_t>(data.size()) - T - 1);
    for (int64_t t = 0; t < T; ++t) {
      b.inputs[i * T + t] = data[o + t];
      b.targets[i * T + t] = data[o + t + 1];
    }
  }
  return b;
}

}  // namespace finetune
