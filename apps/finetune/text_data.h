// The demo's text data: a fixed character vocabulary (the 95 printable ASCII
// characters and '\n'), the shipped corpus (data/corpus) encoded with it,
// and random training windows. The vocabulary does not depend on the corpus,
// so checkpoints stay valid when the corpus changes. No tokenizer training,
// no downloads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace finetune {

// The vocabulary: id 0 is '\n', ids 1..95 are ' ' .. '~'. Other bytes
// (tabs, UTF-8) map to ' '.
inline constexpr int kVocabSize = 96;
int encode_char(char c);
char decode_id(int id);
std::vector<int32_t> encode(const std::string& text);
std::string decode(const std::vector<int32_t>& ids);

// Every *.txt file of `dir` in name order, concatenated. Throws tessera::Error
// naming the folder when it has none.
std::string read_corpus(const std::string& dir);

// SplitMix64: small, portable and seedable, so that runs repeat exactly.
struct Rng {
  uint64_t state;
  uint64_t next();
  int64_t below(int64_t n);  // uniform in [0, n)
  double uniform();          // uniform in [0, 1)
};

// A batch of next-token examples: `inputs` and `targets` are [batch, T]
// row-major; targets[b][t] is the token after inputs[b][t], or -100
// (ignored by the loss) where it should not be learned.
struct Batch {
  std::vector<int32_t> inputs, targets;
};

// `batch` random windows of T+1 tokens of `data`.
Batch corpus_batch(const std::vector<int32_t>& data, int64_t batch, int64_t T, Rng& rng);

}  // namespace finetune
