// DDIM step (Song et al. 2021; the math of diffusers' DDIMScheduler.step), float32 and bfloat16
// CPU kernel (bfloat16 storage, float32 math, one rounding per output).
//
//   m   = model_out, or u + g*(c - u) with [uncond; cond] rows under classifier-free guidance
//         (g: one scale, or per frame for samples laid out [N, F, ...])
//   x0, ε from m by prediction type (ε | v | sample), with a = √ᾱ_t, s = √(1-ᾱ_t)
//   x0  = clamp(x0, ±clip)                          (ε is not recomputed, as in diffusers)
//   σ   = η·√((1-ᾱ_prev)/(1-ᾱ_t))·√(1-ᾱ_t/ᾱ_prev)
//   out = √ᾱ_prev·x0 + √max(1-ᾱ_prev-σ², 0)·ε  [+ σ·noise when η > 0];  x0_out = x0 (optional)
//
// Algorithm: one pass over memory. The flat range [0, N*D) is cut into line-aligned chunks
//   (rows may be few and long or many and short), handed to the threads dynamically; a chunk
//   walks its rows segment by segment, computes the row's coefficients once (a few sqrt), then
//   runs a branch-free `omp simd` loop over the segment (cut at frame boundaries under per-frame
//   guidance, so that each piece has one scale). Prediction type, guidance, clip, noise and
//   x0_out are template parameters: each of the 48 variants is a straight elementwise loop.
//   The chunking driver, the dispatch and the pieces shared with dpmpp_2m_step.cpp (guidance,
//   x0/ε by prediction type, clip, argument checks) are in step_common.h.
//   The elementwise operations follow reference.py in order and rounding (no reciprocals, every
//   product rounded as PyTorch rounds it) and the coefficients are float32 like the reference's:
//   the result equals the float32 reference bit for bit, except where PyTorch's vectorized sqrt
//   is 1 ulp off a coefficient (it is not correctly rounded; std::sqrt is). bfloat16: the same
//   float32 math on the widened inputs, rounded once, as the reference on bfloat16 tensors does.
//   In-place safe (x_out may alias x): each element is read before its outputs are written.
//   The loops are compiled for AVX-512 / AVX2 / baseline, picked at run time, with contraction
//   off (cpu/no_contract.h): an FMA would round once where the reference rounds twice.
//
// Bytes moved (minimal): read x, model_out (1 or 2 rows), noise (η > 0); write x_out [, x0_out]:
//   12-24 bytes per element in float32, half in bfloat16. The PyTorch composition runs ~12
//   elementwise kernels through temporaries: ~100 bytes per element.
// Bound: memory bandwidth (~10 flops per element). The vector targets matter for bfloat16: its
//   conversions (~10 integer ops per output under SSE2, 2-3 under AVX-512) made the baseline loop
//   compute bound.
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

// Per-row coefficients, computed as reference.py computes its [N, 1] tensors (float32).
struct DdimCoef {
  float a, s;   // √ᾱ_t, √(1-ᾱ_t)
  float sap;    // √ᾱ_prev
  float dir;    // √max(1-ᾱ_prev-σ², 0)
  float sigma;  // σ
};

DdimCoef ddim_coef(float ab_t, float ab_p, float eta) {
  DdimCoef c;
  c.a = std::sqrt(ab_t);
  c.s = std::sqrt(1.0f - ab_t);
  c.sap = std::sqrt(ab_p);
  c.sigma = eta * std::sqrt((1.0f - ab_p) / (1.0f - ab_t)) * std::sqrt(1.0f - ab_t / ab_p);
  const float rest = (1.0f - ab_p) - c.sigma * c.sigma;
  c.dir = std::sqrt(rest < 0.0f ? 0.0f : rest);  // clamp_min(0), NaN stays NaN like torch
  return c;
}

// Elements [d0, d1) of row n, guidance scale g; p.aux is the noise.
template <Prediction P, bool GUIDE, bool CLIP, bool NOISE, bool X0>
struct DdimSegment {
  template <class T>
  static VDE_INLINE void run(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1, const DdimCoef& c,
                             float g) {
    const int64_t off = n * p.D;
    const T* x = p.x + off;
    const T* mu = p.mo + off;                             // model_out (uncond) row
    const T* mc = GUIDE ? p.mo + (p.N + n) * p.D : mu;    // cond row
    const T* nz = NOISE ? p.aux + off : nullptr;
    T* xo = p.x_out + off;
    T* x0o = X0 ? p.x0_out + off : nullptr;
    const float a = c.a, s = c.s, sap = c.sap, dir = c.dir, sigma = c.sigma;
    const float lo = p.lo, hi = p.hi;
    VDE_OMP(simd)
    for (int64_t d = d0; d < d1; ++d) {
      const float xv = to_float(x[d]);
      float m = to_float(mu[d]);
      if (GUIDE) m = guide(m, to_float(mc[d]), g);
      float x0 = predict_x0<P>(xv, m, a, s);
      const float eps = predict_eps<P>(xv, m, x0, a, s);  // before the clip, as in diffusers
      if (CLIP) x0 = clamp(x0, lo, hi);
      float out = sap * x0 + dir * eps;
      if (NOISE) out = out + sigma * to_float(nz[d]);
      xo[d] = from_float<T>(out);
      if (X0) x0o[d] = from_float<T>(x0);
    }
  }
};

template <class T>
SegmentFn<T, DdimCoef> pick_segment(Prediction pred, bool guide, bool clip, bool noise, bool x0) {
  SegmentFn<T, DdimCoef> fn = nullptr;
  const Isa isa = cpu_isa();
  with_prediction(pred, [&](auto P) {
    with_bool(guide, [&](auto G) {
      with_bool(clip, [&](auto Cl) {
        with_bool(noise, [&](auto Nz) {
          with_bool(x0, [&](auto X) {
            using Seg = DdimSegment<decltype(P)::value, decltype(G)::value, decltype(Cl)::value,
                                    decltype(Nz)::value, decltype(X)::value>;
            fn = segment_for<Seg, T, DdimCoef>(isa);
          });
        });
      });
    });
  });
  return fn;
}

}  // namespace

void ddim_step_cpu(DType dtype, const StepArgs& a) {
  if (!a.x || !a.model_out || !a.abar_t || !a.abar_next || !a.x_out)
    throw std::invalid_argument(
        "ddim_step_cpu: x, model_out, abar_t, abar_next (ᾱ_prev) and x_out must be non-null");
  check_sizes_and_codes(a, "ddim_step_cpu");
  const bool noise = a.eta > 0.0f;
  if (noise && !a.noise)
    throw std::invalid_argument("ddim_step_cpu: eta > 0 needs noise (got a null noise pointer)");

  with_storage(dtype, "ddim_step_cpu", [&](auto storage) {
    using T = decltype(storage);
    const Ptrs<T> p = make_ptrs<T>(a, a.noise);
    const SegmentFn<T, DdimCoef> seg =
        pick_segment<T>(a.prediction, a.has_guidance, a.has_clip, noise, a.x0_out != nullptr);
    for_each_row_segment<T>(a.N, a.D, [&](int64_t n, int64_t d0, int64_t d1) {
      const int64_t ci = n * a.coef_stride;
      const DdimCoef c = ddim_coef(a.abar_t[ci], a.abar_next[ci], a.eta);
      for_each_guidance_piece(p, d0, d1, [&](int64_t e0, int64_t e1, float g) {
        seg(p, n, e0, e1, c, g);
      });
    });
  });
}

}  // namespace vde
