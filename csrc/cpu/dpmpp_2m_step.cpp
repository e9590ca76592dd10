// DPM-Solver++(2M) step (Lu et al. 2022; data prediction, midpoint form), float32 and bfloat16
// CPU kernel (bfloat16 storage, float32 math, one rounding per output).
//
//   m   = model_out, or u + g*(c - u) with [uncond; cond] rows under classifier-free guidance
//         (g: one scale, or per frame for samples laid out [N, F, ...])
//   x0  = clamp(x0(m) by prediction type, ±clip);   a = √ᾱ, σ = √(1-ᾱ), λ = log(a/σ)
//   h   = λ_next - λ_t,  r = (λ_t - λ_prev)/h,  e^{-h} = (σ_next a_t)/(a_next σ_t)
//   D   = x0 + (x0 - x0_prev)/(2r)  where x0_prev is given and ᾱ_next < 1 (σ_next > 0), else x0
//   out = (σ_next/σ_t)·x + a_next·(1 - e^{-h})·D;   x0_out = x0 (always written)
//
// Algorithm: one pass, as ddim_step.cpp (the driver and shared pieces are in step_common.h):
//   line-aligned chunks of the flat range [0, N*D) handed to the threads dynamically; per row
//   segment the coefficients (sqrt, log) are computed once, then a branch-free `omp simd` loop
//   runs over the segment. Prediction type, guidance, clip and first/second order (chosen per
//   row) are template parameters. The elementwise operations follow reference.py in order and
//   rounding (the division by 2r stays a division), the coefficients are float32 like the
//   reference's: results match it to the last bit except where PyTorch's sqrt/log and libm's
//   differ by an ulp in a coefficient.
//   In-place safe: each element is read before its outputs are written.
//
// Bytes moved (minimal): read x, model_out (1 or 2 rows), x0_prev (second order); write x_out
//   and x0_out: 16-24 bytes per element in float32, half in bfloat16 (the PyTorch composition:
//   ~10 kernels, ~100 B/element).
// Bound: memory bandwidth (~10 flops per element; AVX-512 / AVX2 / baseline without FMA
//   contraction, as ddim_step.cpp).
#include "cpu/no_contract.h"  // first: see step_common.h

#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "common/ops.h"
#include "cpu/step_common.h"

namespace vde {
namespace {

using namespace vde::cpu;
using namespace vde::cpu::step;

struct DpmCoef {
  float a, s;    // √ᾱ_t, √(1-ᾱ_t): x0 from the model output
  float c_x;     // σ_next/σ_t
  float c_d;     // a_next·(1 - e^{-h})
  float two_r;   // 2r (second order only)
  bool second;
};

inline float log_snr(float ab) { return 0.5f * (std::log(ab) - std::log(1.0f - ab)); }

DpmCoef dpm_coef(float ab_t, float ab_n, const float* ab_p, bool have_prev) {
  DpmCoef c;
  c.a = std::sqrt(ab_t);
  c.s = std::sqrt(1.0f - ab_t);
  const float a_n = std::sqrt(ab_n), s_n = std::sqrt(1.0f - ab_n);
  const float exp_neg_h = (s_n * c.a) / (a_n * c.s);
  c.c_x = s_n / c.s;
  c.c_d = a_n * (1.0f - exp_neg_h);
  c.second = have_prev && s_n > 0.0f;  // final step to σ = 0 (ᾱ_next = 1) stays first order
  c.two_r = 1.0f;
  if (c.second) {
    const float lam_t = log_snr(ab_t);
    const float h = log_snr(ab_n) - lam_t;
    const float r = (lam_t - log_snr(*ab_p)) / h;
    c.two_r = 2.0f * r;
  }
  return c;
}

// Elements [d0, d1) of row n, guidance scale g; p.aux is x0_prev.
template <Prediction P, bool GUIDE, bool CLIP, bool SECOND>
struct DpmSegment {
  template <class T>
  static VDE_INLINE void run(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1, const DpmCoef& c,
                             float g) {
    const int64_t off = n * p.D;
    const T* x = p.x + off;
    const T* mu = p.mo + off;
    const T* mc = GUIDE ? p.mo + (p.N + n) * p.D : mu;
    const T* xp = SECOND ? p.aux + off : nullptr;
    T* xo = p.x_out + off;
    T* x0o = p.x0_out + off;
    const float a = c.a, s = c.s, c_x = c.c_x, c_d = c.c_d, two_r = c.two_r;
    const float lo = p.lo, hi = p.hi;
    VDE_OMP(simd)
    for (int64_t d = d0; d < d1; ++d) {
      const float xv = to_float(x[d]);
      float m = to_float(mu[d]);
      if (GUIDE) m = guide(m, to_float(mc[d]), g);
      float x0 = predict_x0<P>(xv, m, a, s);
      if (CLIP) x0 = clamp(x0, lo, hi);
      float dd = x0;
      if (SECOND) dd = x0 + (x0 - to_float(xp[d])) / two_r;
      xo[d] = from_float<T>(c_x * xv + c_d * dd);
      x0o[d] = from_float<T>(x0);
    }
  }
};

// [first order, second order] segment functions for one (prediction, guidance, clip).
template <class T>
struct Segments {
  SegmentFn<T, DpmCoef> first, second;
};

template <class T>
Segments<T> pick_segments(Prediction pred, bool guide, bool clip) {
  Segments<T> out{nullptr, nullptr};
  const Isa isa = cpu_isa();
  with_prediction(pred, [&](auto P) {
    with_bool(guide, [&](auto G) {
      with_bool(clip, [&](auto Cl) {
        constexpr Prediction p = decltype(P)::value;
        constexpr bool g = decltype(G)::value, cl = decltype(Cl)::value;
        out = {segment_for<DpmSegment<p, g, cl, false>, T, DpmCoef>(isa),
               segment_for<DpmSegment<p, g, cl, true>, T, DpmCoef>(isa)};
      });
    });
  });
  return out;
}

}  // namespace

void dpmpp_2m_step_cpu(DType dtype, const StepArgs& a) {
  if (!a.x || !a.model_out || !a.abar_t || !a.abar_next || !a.x_out || !a.x0_out)
    throw std::invalid_argument(
        "dpmpp_2m_step_cpu: x, model_out, abar_t, abar_next, x_out and x0_out must be non-null");
  if (a.x0_prev && !a.abar_prev)
    throw std::invalid_argument("dpmpp_2m_step_cpu: x0_prev given without abar_prev");
  check_sizes_and_codes(a, "dpmpp_2m_step_cpu");

  const bool have_prev = a.x0_prev != nullptr;
  with_storage(dtype, "dpmpp_2m_step_cpu", [&](auto storage) {
    using T = decltype(storage);
    const Ptrs<T> p = make_ptrs<T>(a, a.x0_prev);
    const Segments<T> segs = pick_segments<T>(a.prediction, a.has_guidance, a.has_clip);
    for_each_row_segment<T>(a.N, a.D, [&](int64_t n, int64_t d0, int64_t d1) {
      const int64_t ci = n * a.coef_stride;
      const DpmCoef c = dpm_coef(a.abar_t[ci], a.abar_next[ci],
                                 have_prev ? a.abar_prev + ci : nullptr, have_prev);
      const SegmentFn<T, DpmCoef> seg = c.second ? segs.second : segs.first;
      for_each_guidance_piece(p, d0, d1, [&](int64_t e0, int64_t e1, float g) {
        seg(p, n, e0, e1, c, g);
      });
    });
  });
}

}  // namespace vde
