// Pieces shared by the group-normalization CPU kernels: posgn.cpp (contiguous NCHW, and the
// entry points) and posgn_nhwc.cpp (channels-last): the op's description, the SiLU exponential
// and the work split.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/bf16.h"
#include "cpu/cpu_common.h"

namespace vde {
namespace cpu {
namespace gn {

// ---- the op -------------------------------------------------------------------------------------
// Layout: NCHW (x[n, c, p] at (n*C + c)*HW + p) or, with nhwc, channels-last (at (n*HW + p)*C + c);
// the tables are laid out like x with M rows, weight and bias are [C].
template <class T>  // storage: float or bf16
struct GN {
  const T* x;
  const T* scale;  // nullable (group_norm): no table
  const T* shift;  // nullable with scale
  const T* w;  // nullable
  const T* b;  // nullable
  T* y;
  int64_t N, C, HW, M, G, Cg, L;  // L = Cg*HW, elements per group and frame
  int64_t F;                      // frames per group: rows v*F .. v*F+F-1 (1 for posgn)
  float eps;
  bool silu;
  bool nhwc;  // channels-last x, tables and y
};

// Pass-1 sums of a group, in fp64: Σd and Σd², d = x - shift (shift: the group's first element).
struct Moments {
  double s1 = 0.0, s2 = 0.0;
};

// exp(x) for SiLU without a libm call, so the loop vectorizes: Cephes expf (range reduction by ln2,
// degree-6 polynomial, ~1 ulp). Results below FLT_MIN flush to 0; x > 88 saturates at e^88; NaN
// stays NaN (and never reaches the float -> int conversion).
VDE_INLINE float exp_poly(float x) {
  const float xc = x > 88.0f ? 88.0f : (x >= -87.33f ? x : -87.33f);
  const float t = xc * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer (|t| < 2^22)
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return x < -87.33f ? 0.0f : (x != x ? x : p * two_n);
}

// [begin, end) of part `i` of `parts` near-equal parts of [0, total).
inline void split(int64_t total, int64_t parts, int64_t i, int64_t& begin, int64_t& end) {
  begin = total * i / parts;
  end = total * (i + 1) / parts;
}

// The channels-last kernel (posgn_nhwc.cpp), for T = float and bf16.
template <class T>
void run_nhwc(const GN<T>& p);

}  // namespace gn
}  // namespace cpu
}  // namespace vde
