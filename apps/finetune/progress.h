// Training progress for people: on a terminal, one line redrawn in place
//   pretrain  120/400 [=======>          ] loss 2.314  21.3K tok/s  ETA 0:13
// and, when the output is not a terminal (a log file, CI), a plain line every
// `log_every` steps and at the end. It only prints; it measures nothing but
// wall time.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace finetune {

class Progress {
 public:
  // `stream` is usually stderr; `is_terminal` decides the style (isatty by default).
  Progress(std::string phase, int total_steps, int log_every, FILE* stream = stderr, int is_terminal = -1);
  // After each step: its 1-based number, its loss and the tokens it processed.
  void update(int step, double loss, long long tokens);
  // A message printed on its own line (the bar is redrawn after it).
  void note(const std::string& message);
  // Ends the bar's line.
  void finish();

 private:
  std::string line(int step, double loss) const;
  std::string phase_;
  int total_, log_every_;
  FILE* out_;
  bool tty_;
  bool drawn_ = false;
  int first_step_ = -1;
  long long tokens_ = 0;
  double smoothed_loss_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// "1:05", "0:07", "1:02:03".
std::string format_duration(double seconds);

}  // namespace finetune
