// Reading tessera-finetune's printed output in the tests that run it as a
// process (test_finetune_app, test_finetune_gpu): a number after a label,
// and the closing "held-out accuracy: base X% -> fine-tuned Y%" line.
// Header-only; nothing here is under test.
#pragma once

#include <regex>
#include <string>

namespace tessera::test_util {

// The number printed after `label` (a regex) and one space, or -1 if none is.
inline double number_after(const std::string& text, const std::string& label) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(label + " ([-0-9.e+]+)"))) return -1;
  return std::stod(m[1]);
}

// The base and fine-tuned held-out accuracies (percent) of the closing line;
// false when the output has no such line.
inline bool held_out_accuracy(const std::string& text, double& base, double& tuned) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(R"(held-out accuracy: base ([0-9.]+)% -> fine-tuned ([0-9.]+)%)")))
    return false;
  base = std::stod(m[1]);
  tuned = std::stod(m[2]);
  return true;
}

}  // namespace tessera::test_util
