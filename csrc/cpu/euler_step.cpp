// Euler step of the probability-flow ODE in σ (Karras et al. 2022, Alg. 1 without churn; the
// math of diffusers' EulerDiscreteScheduler.step with s_churn = 0), float32 and bfloat16 CPU kernel
// (bfloat16 storage, float32 math, one rounding per output).
//
//   m   = model_out, or u + g*(c - u) with [uncond; cond] rows under classifier-free guidance
//         (g: one scale, or per frame for samples laid out [N, F, ...], as SVD's linspace)
//   x0  = x - σ·m                              (epsilon)
//         m·(-σ/√(σ²+1)) + x/(σ²+1)            (v: EDM's c_out, c_skip with σ_data = 1)
//         m                                    (sample)
//   x0  = clamp(x0, ±clip)                     (optional)
//   out = x + ((x - x0)/σ)·(σ_next - σ);       x0_out = x0 (optional)
// x lives in the variance-exploding space x = x0 + σ·ε (the sampler scales the model's input by
// 1/√(σ²+1)); σ_next = 0 lands on x0.
//
// Algorithm: one pass, as ddim_step.cpp (the chunking driver, dispatch and shared pieces are in
//   step_common.h): line-aligned chunks of the flat range [0, N*D) handed to the threads
//   dynamically; per row segment the coefficients (one sqrt) are computed once, then a
//   branch-free `omp simd` loop runs over the segment. Prediction type, guidance, clip and x0_out
//   are template parameters (24 straight elementwise loops). The elementwise operations follow
//   reference.euler_step in order and rounding (divisions stay divisions), so results match the
//   float32 reference to the last bit except where PyTorch's sqrt differs by an ulp.
//   In-place safe: each element is read before its outputs are written.
//
// Bytes moved (minimal): read x, model_out (1 or 2 rows); write x_out [, x0_out]: 12-20 bytes per
//   element in float32, half in bfloat16 (the PyTorch composition of diffusers' step: ~8 kernels
//   through temporaries).
// Bound: memory bandwidth (~8 flops per element; AVX-512 / AVX2 / baseline without FMA
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

struct EulerCoef {
  float sigma;  // σ
  float dt;     // σ_next - σ
  float c_out;  // -σ/√(σ²+1)  (v-prediction)
  float den;    // σ²+1        (v-prediction: x/(σ²+1))
};

EulerCoef euler_coef(float sigma, float sigma_next) {
  EulerCoef c;
  c.sigma = sigma;
  c.dt = sigma_next - sigma;
  c.den = sigma * sigma + 1.0f;
  c.c_out = -sigma / std::sqrt(c.den);
  return c;
}

template <Prediction P>
VDE_INLINE float euler_x0(float x, float m, const EulerCoef& c) {
  if constexpr (P == Prediction::epsilon) return x - c.sigma * m;
  else if constexpr (P == Prediction::v) return m * c.c_out + x / c.den;
  else return m;
}

// Elements [d0, d1) of row n, guidance scale g.
template <Prediction P, bool GUIDE, bool CLIP, bool X0>
struct EulerSegment {
  template <class T>
  static VDE_INLINE void run(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1,
                             const EulerCoef& c, float g) {
    const int64_t off = n * p.D;
    const T* x = p.x + off;
    const T* mu = p.mo + off;
    const T* mc = GUIDE ? p.mo + (p.N + n) * p.D : mu;
    T* xo = p.x_out + off;
    T* x0o = X0 ? p.x0_out + off : nullptr;
    const EulerCoef cc = c;
    const float lo = p.lo, hi = p.hi;
    VDE_OMP(simd)
    for (int64_t d = d0; d < d1; ++d) {
      const float xv = to_float(x[d]);
      float m = to_float(mu[d]);
      if (GUIDE) m = guide(m, to_float(mc[d]), g);
      float x0 = euler_x0<P>(xv, m, cc);
      if (CLIP) x0 = clamp(x0, lo, hi);
      const float deriv = (xv - x0) / cc.sigma;
      xo[d] = from_float<T>(xv + deriv * cc.dt);
      if (X0) x0o[d] = from_float<T>(x0);
    }
  }
};

template <class T>
SegmentFn<T, EulerCoef> pick_segment(Prediction pred, bool guide, bool clip, bool x0) {
  SegmentFn<T, EulerCoef> fn = nullptr;
  const Isa isa = cpu_isa();
  with_prediction(pred, [&](auto P) {
    with_bool(guide, [&](auto G) {
      with_bool(clip, [&](auto Cl) {
        with_bool(x0, [&](auto X) {
          using Seg = EulerSegment<decltype(P)::value, decltype(G)::value, decltype(Cl)::value,
                                   decltype(X)::value>;
          fn = segment_for<Seg, T, EulerCoef>(isa);
        });
      });
    });
  });
  return fn;
}

}  // namespace

void euler_step_cpu(DType dtype, const StepArgs& a) {
  if (!a.x || !a.model_out || !a.abar_t || !a.abar_next || !a.x_out)
    throw std::invalid_argument(
        "euler_step_cpu: x, model_out, abar_t (σ), abar_next (σ_next) and x_out must be non-null");
  check_sizes_and_codes(a, "euler_step_cpu");

  with_storage(dtype, "euler_step_cpu", [&](auto storage) {
    using T = decltype(storage);
    const Ptrs<T> p = make_ptrs<T>(a, nullptr);
    const SegmentFn<T, EulerCoef> seg =
        pick_segment<T>(a.prediction, a.has_guidance, a.has_clip, a.x0_out != nullptr);
    for_each_row_segment<T>(a.N, a.D, [&](int64_t n, int64_t d0, int64_t d1) {
      const int64_t ci = n * a.coef_stride;
      const EulerCoef c = euler_coef(a.abar_t[ci], a.abar_next[ci]);
      for_each_guidance_piece(p, d0, d1, [&](int64_t e0, int64_t e1, float g) {
        seg(p, n, e0, e1, c, g);
      });
    });
  });
}

}  // namespace vde
