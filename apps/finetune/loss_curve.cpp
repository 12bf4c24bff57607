// CSV and SVG forms of a run's loss curve (loss_curve.h).
#include "loss_curve.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "tessera/error.h"

namespace finetune {

std::string curve_csv(const std::vector<CurvePoint>& points) {
  std::ostringstream s;
  s << "phase,step,loss,eval_accuracy\n";
  char buf[128];
  for (const CurvePoint& p : points) {
    std::snprintf(buf, sizeof buf, "%s,%d,%.6g,%s\n", p.phase.c_str(), p.step, p.loss,
                  p.accuracy >= 0 ? std::to_string(p.accuracy).c_str() : "");
    s << buf;
  }
  return s.str();
}

std::vector<CurvePoint> parse_curve_csv(const std::string& text) {
  std::vector<CurvePoint> points;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number == 1 || line.empty()) continue;
    std::vector<std::string> f;
    std::string field;
    std::istringstream ls(line);
    while (std::getline(ls, field, ',')) f.push_back(field);
    if (line.back() == ',') f.push_back("");
    if (f.size() != 4) throw tessera::Error("loss curve CSV line " + std::to_string(number) + ": expected 4 fields");
    try {
      CurvePoint p;
      p.phase = f[0];
      p.step = std::stoi(f[1]);
      p.loss = std::stod(f[2]);
      p.accuracy = f[3].empty() ? -1 : std::stod(f[3]);
      points.push_back(p);
    } catch (const std::exception&) {
      throw tessera::Error("loss curve CSV line " + std::to_string(number) + ": not a number in '" + line + "'");
    }
  }
  return points;
}

std::string curve_svg(const std::vector<CurvePoint>& points, const std::string& title) {
  const double W = 720, H = 360, left = 60, right = 60, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  int max_step = 1;
  double max_loss = 0;
  for (const CurvePoint& p : points) {
    max_step = std::max(max_step, p.step);
    if (std::isfinite(p.loss)) max_loss = std::max(max_loss, p.loss);
  }
  max_loss = max_loss > 0 ? std::ceil(max_loss) : 1;
  auto x = [&](double step) { return left + pw * step / max_step; };
  auto y_loss = [&](double loss) { return top + ph * (1 - std::min(loss, max_loss) / max_loss); };
  auto y_acc = [&](double acc) { return top + ph * (1 - acc); };

  std::ostringstream s;
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H);
  s << buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">", left);
  s << buf << title << "</text>\n";
  // Axes, ticks and labels.
  std::snprintf(buf, sizeof buf, "<path d=\"M%.1f %.1f V%.1f H%.1f V%.1f\" fill=\"none\" stroke=\"#444\"/>\n", left,
                top, top + ph, left + pw, top);
  s << buf;
  for (int i = 0; i <= 4; ++i) {
    const double v = max_loss * i / 4, yy = y_loss(v);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" "
                  "text-anchor=\"end\">%.2g</text><text x=\"%.1f\" y=\"%.1f\" fill=\"#2a7\">%d%%</text>\n",
                  left, left + pw, yy, yy, left - 6, yy + 4, v, left + pw + 6, y_acc(i / 4.0) + 4, 25 * i);
    s << buf;
  }
  for (int i = 0; i <= 4; ++i) {
    const double st = max_step * i / 4.0;
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", x(st),
                  top + ph + 18, st);
    s << buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n<text x=\"14\" y=\"%.1f\" "
                "transform=\"rotate(-90 14 %.1f)\" text-anchor=\"middle\">loss</text>\n<text x=\"%.1f\" y=\"%.1f\" "
                "transform=\"rotate(90 %.1f %.1f)\" text-anchor=\"middle\" fill=\"#2a7\">held-out accuracy</text>\n",
                left + pw / 2, H - 10, top + ph / 2, top + ph / 2, W - 14, top + ph / 2, W - 14, top + ph / 2);
  s << buf;
  // One polyline per phase, in order of first appearance.
  const char* colors[] = {"#36c", "#d62", "#93c", "#555"};
  std::vector<std::string> phases;
  for (const CurvePoint& p : points)
    if (std::find(phases.begin(), phases.end(), p.phase) == phases.end()) phases.push_back(p.phase);
  for (size_t k = 0; k < phases.size(); ++k) {
    s << "<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"" << colors[k % 4] << "\" points=\"";
    for (const CurvePoint& p : points)
      if (p.phase == phases[k] && std::isfinite(p.loss)) {
        std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(p.step), y_loss(p.loss));
        s << buf;
      }
    s << "\"/>\n";
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\">%s loss</text>\n", left + 10 + 130 * k,
                  top + 14, colors[k % 4], phases[k].c_str());
    s << buf;
  }
  for (const CurvePoint& p : points)
    if (p.accuracy >= 0) {
      std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#2a7\"/>\n", x(p.step),
                    y_acc(p.accuracy));
      s << buf;
    }
  s << "</svg>\n";
  return s.str();
}

}  // namespace finetune
