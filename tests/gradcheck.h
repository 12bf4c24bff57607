// Gradient checks shared by the autodiff tests: central finite differences
// of a weighted sum of a graph's output, evaluated by the float64 reference
// interpreter, and an elementwise comparison that reports what differs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "reference/reference.h"
#include "tessera/graph.h"

namespace tessera::gradcheck {

// d L / d args[wrt] for L = sum(y * weights), y the output "y" of `forward`,
// by central differences of size `step`.
inline std::vector<double> finite_differences(const Graph& forward, std::map<std::string, ref::RefTensor> args,
                                              const std::string& wrt, const std::vector<double>& weights,
                                              double step) {
  auto loss = [&] {
    const ref::RefTensor y = ref::evaluate(forward, args).at("y");
    double s = 0;
    for (size_t e = 0; e < y.data.size(); ++e) s += y.data[e] * weights[e];
    return s;
  };
  std::vector<double>& x = args.at(wrt).data;
  std::vector<double> fd(x.size());
  for (size_t e = 0; e < fd.size(); ++e) {
    const double x0 = x[e];
    x[e] = x0 + step;
    const double lp = loss();
    x[e] = x0 - step;
    const double lm = loss();
    x[e] = x0;
    fd[e] = (lp - lm) / (2 * step);
  }
  return fd;
}

// Expects |got - fd| <= atol + rtol |fd| everywhere, listing the first misses.
inline void expect_close(const std::vector<double>& got, const std::vector<double>& fd, double atol, double rtol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), fd.size()) << what;
  int bad = 0;
  std::ostringstream os;
  for (size_t e = 0; e < fd.size(); ++e) {
    if (std::fabs(got[e] - fd[e]) <= atol + rtol * std::fabs(fd[e])) continue;
    if (bad++ < 6) os << "\n    [" << e << "]: got " << got[e] << ", finite differences " << fd[e];
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << fd.size() << " elements differ" << std::setprecision(12)
                    << os.str();
}

}  // namespace tessera::gradcheck
