// The loss curve of a run, written at the end as CSV (phase,step,loss,
// eval_accuracy) and as an SVG line chart (one polyline per phase, eval
// accuracy points on a second axis). Plain text output; no plotting library.
#pragma once

#include <string>
#include <vector>

namespace finetune {

struct CurvePoint {
  std::string phase;       // "pretrain", "finetune"
  int step = 0;            // global step (phases follow each other)
  double loss = 0;
  double accuracy = -1;    // held-out accuracy when evaluated at this step, else -1
};

std::string curve_csv(const std::vector<CurvePoint>& points);
std::string curve_svg(const std::vector<CurvePoint>& points, const std::string& title);
// Reads back what curve_csv wrote (for resuming a run). Throws tessera::Error
// naming the line on malformed input.
std::vector<CurvePoint> parse_curve_csv(const std::string& text);

}  // namespace finetune
