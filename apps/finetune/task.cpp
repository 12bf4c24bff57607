// The synthetic fine-tuning task (task.h).
#include "task.h"

#include <cctype>
#include <set>

#include "tessera/error.h"

namespace finetune {

TaskKind parse_task(const std::string& name) {
  if (name == "reverse") return TaskKind::reverse;
  if (name == "upper") return TaskKind::upper;
  throw tessera::Error("unknown task '" + name + "' (known: reverse, upper)");
}

std::string task_name(TaskKind kind) { return kind == TaskKind::reverse ? "reverse" : "upper"; }

Task::Task(TaskKind kind, int min_len, int max_len) : kind_(kind), min_len_(min_len), max_len_(max_len) {
  if (min_len < 1 || max_len < min_len)
    throw tessera::Error("task: word lengths must satisfy 1 <= min <= max, got " + std::to_string(min_len) + ".." +
                         std::to_string(max_len));
}

namespace {
// Which half a word belongs to: a fixed hash, so that the split does not depend on the seed.
bool is_held_out(const std::string& w) {
  uint64_t h = 1469598103934665603ull;
  for (char c : w) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h % 5 == 0;  // a fifth of all words
}
}  // namespace

std::string Task::answer_for(const std::string& word) const {
  std::string a = word;
  if (kind_ == TaskKind::reverse) return std::string(word.rbegin(), word.rend());
  for (char& c : a) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return a;
}

Example Task::sample(Rng& rng, bool held_out) const {
  while (true) {
    const int len = min_len_ + static_cast<int>(rng.below(max_len_ - min_len_ + 1));
    std::string w;
    for (int i = 0; i < len; ++i) w += static_cast<char>('a' + rng.below(26));
    if (is_held_out(w) == held_out) return Example{w + ">", answer_for(w)};
  }
}

std::vector<Example> Task::held_out_set(int n, uint64_t seed) const {
  Rng rng{seed};
  std::set<std::string> seen;
  std::vector<Example> set;
  while (static_cast<int>(set.size()) < n) {
    Example e = sample(rng, true);
    if (seen.insert(e.prompt).second) set.push_back(e);
  }
  return set;
}

Batch Task::batch(int64_t batch, int64_t T, Rng& rng) const {
  Batch b;
  b.inputs.resize(batch * T);
  b.targets.resize(batch * T);
  for (int64_t r = 0; r < batch; ++r) {
    // T+1 tokens: '\n' then whole examples, each "<prompt><answer>\n"; learn <answer>\n.
    std::vector<int32_t> tok{encode_char('\n')};
    std::vector<bool> learn{false};
    while (static_cast<int64_t>(tok.size()) < T + 1) {
      const Example e = sample(rng, false);
      for (char c : e.prompt) tok.push_back(encode_char(c)), learn.push_back(false);
      for (char c : e.answer + "\n") tok.push_back(encode_char(c)), learn.push_back(true);
    }
    for (int64_t t = 0; t < T; ++t) {
      b.inputs[r * T + t] = tok[t];
      b.targets[r * T + t] = learn[t + 1] ? tok[t + 1] : -100;
    }
  }
  return b;
}

double Task::accuracy(const std::vector<Example>& set,
                      const std::function<std::vector<std::string>(const std::vector<std::string>&)>& generate) const {
  if (set.empty()) return 0;
  std::vector<std::string> prompts;
  for (const Example& e : set) prompts.push_back(e.prompt);
  const std::vector<std::string> answers = generate(prompts);
  int right = 0;
  for (size_t i = 0; i < set.size(); ++i) right += i < answers.size() && answers[i] == set[i].answer;
  return static_cast<double>(right) / static_cast<double>(set.size());
}

std::string Task::describe() const {
  const std::string lengths =
      min_len_ == max_len_ ? std::to_string(min_len_) : std::to_string(min_len_) + "-" + std::to_string(max_len_);
  return task_name(kind_) + " words of " + lengths +
         " letters (e.g. cat>" + answer_for("cat") + ")";
}

}  // namespace finetune
