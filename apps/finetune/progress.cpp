// The progress bar and plain log lines (progress.h).
#include "progress.h"

#include <unistd.h>

#include <cmath>

namespace finetune {

std::string format_duration(double seconds) {
  long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

Progress::Progress(std::string phase, int total_steps, int log_every, FILE* stream, int is_terminal)
    : phase_(std::move(phase)), total_(total_steps), log_every_(std::max(1, log_every)), out_(stream) {
  tty_ = is_terminal >= 0 ? is_terminal != 0 : ::isatty(::fileno(stream)) != 0;
  start_ = std::chrono::steady_clock::now();
}

std::string Progress::line(int step, double loss) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int done = step - first_step_ + 1;
  const double per_step = done > 0 ? elapsed / done : 0;
  const double rate = elapsed > 0 ? static_cast<double>(tokens_) / elapsed : 0;
  char rate_text[32];
  if (rate >= 1e6) std::snprintf(rate_text, sizeof rate_text, "%.2fM", rate / 1e6);
  else if (rate >= 1e3) std::snprintf(rate_text, sizeof rate_text, "%.1fK", rate / 1e3);
  else std::snprintf(rate_text, sizeof rate_text, "%.0f", rate);
  char buf[256];
  std::string bar;
  if (tty_) {
    const int width = 24, filled = total_ > 0 ? width * step / total_ : width;
    bar = "[" + std::string(filled, '=') + (filled < width ? ">" + std::string(width - filled - 1, ' ') : "") + "] ";
  }
  std::snprintf(buf, sizeof buf, "%-9s %5d/%d %sloss %.4f  %s tok/s  ETA %s", phase_.c_str(), step, total_,
                bar.c_str(), loss, rate_text, format_duration(per_step * (total_ - step)).c_str());
  return buf;
}

void Progress::update(int step, double loss, long long tokens) {
  if (first_step_ < 0) {
    first_step_ = step;
    start_ = std::chrono::steady_clock::now();  // the first step includes warm-up: time from here
    smoothed_loss_ = loss;
  } else {
    tokens_ += tokens;
  }
  smoothed_loss_ = 0.9 * smoothed_loss_ + 0.1 * loss;
  if (tty_) {
    std::fprintf(out_, "\r%s\033[K", line(step, smoothed_loss_).c_str());
    drawn_ = true;
  } else if (step % log_every_ == 0 || step == total_) {
    std::fprintf(out_, "%s\n", line(step, loss).c_str());
  }
  std::fflush(out_);
}

void Progress::note(const std::string& message) {
  if (tty_ && drawn_) std::fprintf(out_, "\r\033[K");
  std::fprintf(out_, "%s\n", message.c_str());
  drawn_ = false;
  std::fflush(out_);
}

void Progress::finish() {
  if (tty_ && drawn_) std::fprintf(out_, "\n");
  drawn_ = false;
  std::fflush(out_);
}

}  // namespace finetune
