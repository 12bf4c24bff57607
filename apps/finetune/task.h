// The fine-tuning task: a synthetic text task whose success can be measured
// exactly. Each example is a line "<prompt><answer>\n", where the prompt is a
// short lowercase word followed by '>' and the answer is that word
//   reverse:  "cat>tac"
//   upper:    "cat>CAT"
// A model pretrained on English text gets these wrong; a fine-tuned one
// should get them right. Accuracy is exact match of the greedy answer on
// held-out words (words are random letter strings, split by a hash into
// train and held-out, so no held-out word is ever trained on).
// This file makes data and scores answers; it does not run a model.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "text_data.h"

namespace finetune {

enum class TaskKind { reverse, upper };
TaskKind parse_task(const std::string& name);  // throws tessera::Error on an unknown name
std::string task_name(TaskKind kind);

struct Example {
  std::string prompt;  // "cat>"
  std::string answer;  // "tac"
};

class Task {
 public:
  Task(TaskKind kind, int min_len = 3, int max_len = 3);
  // A random example from the training half (held_out = false) or the held-out half.
  Example sample(Rng& rng, bool held_out) const;
  // `n` distinct held-out examples, the same for the same seed.
  std::vector<Example> held_out_set(int n, uint64_t seed) const;
  // A training batch: each row is '\n'-separated examples packed into T+1
  // tokens; only answer tokens and the closing '\n' are targets (the rest -100).
  Batch batch(int64_t batch, int64_t T, Rng& rng) const;
  // Exact-match accuracy of `generate` (prompt -> the model's answer, read up to '\n') over `set`.
  double accuracy(const std::vector<Example>& set, const std::function<std::vector<std::string>(
                                                        const std::vector<std::string>&)>& generate) const;
  TaskKind kind() const { return kind_; }
  std::string describe() const;

 private:
  std::string answer_for(const std::string& word) const;
  TaskKind kind_;
  int min_len_, max_len_;
};

}  // namespace finetune
