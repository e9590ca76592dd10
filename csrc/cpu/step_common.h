// Helpers shared by the diffusion step CPU kernels (ddim_step.cpp, dpmpp_2m_step.cpp,
// euler_step.cpp): argument checks, the row pointers, compile-time dispatch on prediction type and
// flags, the elementwise pieces the steps share (guidance, x0/ε by prediction type, clip) and the
// parallel driver that walks [0, N*D) in line-aligned chunks, row segment by row segment.
//
// The segment loops are compiled for AVX-512, AVX2 and the baseline and picked per call (cpu_isa(),
// see segment_for), always without FMA contraction: each step file includes cpu/no_contract.h
// first, so the elementwise math keeps the reference's rounding (see the top comment of
// ddim_step.cpp) on every instruction set.
// Storage: the tensors are T (float or bf16, see bf16.h), the math float32 either way; the
// coefficient tensors (ᾱ, σ, per-frame guidance) are float32 always.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/ops.h"
#include "cpu/bf16.h"
#include "cpu/cpu_common.h"

#ifndef VDE_NO_CONTRACT
#error "a step kernel file must include cpu/no_contract.h first (see step_common.h)"
#endif

namespace vde {
namespace cpu {
namespace step {

// ---- argument checks ----------------------------------------------------------------------------

// Checks shared by the step launchers (`op` prefixes the messages): N, D, coef_stride, prediction.
inline void check_sizes_and_codes(const StepArgs& a, const char* op) {
  if (a.N <= 0 || a.D <= 0)
    throw std::invalid_argument(std::string(op) + ": N and D must be positive, got N=" +
                                std::to_string(a.N) + " D=" + std::to_string(a.D));
  if (a.coef_stride != 0 && a.coef_stride != 1)
    throw std::invalid_argument(std::string(op) +
                                ": coef_stride must be 0 (one ᾱ) or 1 (one per row), got " +
                                std::to_string(a.coef_stride));
  const int pred = static_cast<int>(a.prediction);
  if (pred < 0 || pred > 2)
    throw std::invalid_argument(std::string(op) +
                                ": prediction must be 0 (epsilon), 1 (v) or 2 (sample), got " +
                                std::to_string(pred));
  if (a.guidance_frames && (!a.has_guidance || a.frames <= 0 || a.frame_inner <= 0 ||
                            a.frames * a.frame_inner != a.D))
    throw std::invalid_argument(std::string(op) +
                                ": per-frame guidance needs has_guidance and frames * frame_inner "
                                "== D, got frames=" + std::to_string(a.frames) + " frame_inner=" +
                                std::to_string(a.frame_inner) + " D=" + std::to_string(a.D));
}

// ---- row pointers -------------------------------------------------------------------------------

template <class T>
struct Ptrs {
  const T* x;
  const T* mo;   // model_out: [N, D], or [2N, D] ([uncond; cond]) under guidance
  const T* aux;  // the op's third input (DDIM: noise, DPM++: x0_prev), nullable
  T* x_out;
  T* x0_out;
  int64_t N, D;
  float g, lo, hi;   // guidance scale, clip bounds
  const float* gf;   // per-frame guidance scales [D / inner], or nullptr (then g)
  int64_t inner;     // elements per frame within a row (with gf)
};

template <class T>
inline Ptrs<T> make_ptrs(const StepArgs& a, const void* aux) {
  return Ptrs<T>{static_cast<const T*>(a.x), static_cast<const T*>(a.model_out),
                 static_cast<const T*>(aux), static_cast<T*>(a.x_out),
                 static_cast<T*>(a.x0_out), a.N, a.D, a.guidance_scale, -a.clip_sample,
                 a.clip_sample, a.guidance_frames, a.frame_inner};
}

// Calls piece(d0, d1, g) over the parts of [d0, d1) (elements of one row) that share one guidance
// scale g: the whole range with the scalar scale, else the range cut at frame boundaries (element
// d of a row is in frame d / inner). The segment loops stay branch-free either way.
template <class T, class Piece>
VDE_INLINE void for_each_guidance_piece(const Ptrs<T>& p, int64_t d0, int64_t d1,
                                        const Piece& piece) {
  if (!p.gf) {
    piece(d0, d1, p.g);
    return;
  }
  for (int64_t d = d0; d < d1;) {
    const int64_t f = d / p.inner;
    const int64_t e = std::min(d1, (f + 1) * p.inner);
    piece(d, e, p.gf[f]);
    d = e;
  }
}

// ---- compile-time dispatch ----------------------------------------------------------------------

template <Prediction P>
using PredictionC = std::integral_constant<Prediction, P>;

// fn(PredictionC<pred>{}).
template <class Fn>
void with_prediction(Prediction pred, Fn&& fn) {
  switch (pred) {
    case Prediction::epsilon: fn(PredictionC<Prediction::epsilon>{}); break;
    case Prediction::v: fn(PredictionC<Prediction::v>{}); break;
    case Prediction::sample: fn(PredictionC<Prediction::sample>{}); break;
  }
}

template <bool B, class Fn>
void with_bool_impl(Fn&& fn) {
  fn(std::integral_constant<bool, B>{});
}
// fn(std::integral_constant<bool, b>{}).
template <class Fn>
void with_bool(bool b, Fn&& fn) {
  if (b) with_bool_impl<true>(fn);
  else with_bool_impl<false>(fn);
}

// ---- elementwise pieces (as reference.py, operation for operation) ------------------------------

// Classifier-free guidance: u + g*(c - u).
VDE_INLINE float guide(float u, float c, float g) { return u + g * (c - u); }

// x0 from the model output m by prediction type, with a = √ᾱ_t, s = √(1-ᾱ_t).
template <Prediction P>
VDE_INLINE float predict_x0(float x, float m, float a, float s) {
  if constexpr (P == Prediction::epsilon) return (x - s * m) / a;
  else if constexpr (P == Prediction::v) return a * x - s * m;
  else return m;
}

// ε from the model output m and the (unclipped) x0 of predict_x0.
template <Prediction P>
VDE_INLINE float predict_eps(float x, float m, float x0, float a, float s) {
  if constexpr (P == Prediction::epsilon) return m;
  else if constexpr (P == Prediction::v) return a * m + s * x;
  else return (x - a * x0) / s;
}

// torch.clamp order: max with lo, then min with hi; NaN propagates.
VDE_INLINE float clamp(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// ---- per-instruction-set segment functions ------------------------------------------------------

// A step file's segment: a struct Seg with
//   template <class T> static VDE_INLINE void run(const Ptrs<T>&, int64_t n, int64_t d0,
//                                                  int64_t d1, const Coef&, float g)
// (elements [d0, d1) of row n with guidance scale g), its flags baked into Seg's template
// arguments. segment_for<Seg, T, Coef>() gives run compiled for the CPU's instruction set.
template <class T, class Coef>
using SegmentFn = void (*)(const Ptrs<T>&, int64_t, int64_t, int64_t, const Coef&, float);

template <class Seg, class T, class Coef>
void segment_base(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1, const Coef& c, float g) {
  Seg::run(p, n, d0, d1, c, g);
}
#ifdef VDE_X86
template <class Seg, class T, class Coef>
VDE_TARGET_AVX2 void segment_avx2(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1,
                                  const Coef& c, float g) {
  Seg::run(p, n, d0, d1, c, g);
}
template <class Seg, class T, class Coef>
VDE_TARGET_AVX512_ZMM void segment_avx512(const Ptrs<T>& p, int64_t n, int64_t d0, int64_t d1,
                                          const Coef& c, float g) {
  Seg::run(p, n, d0, d1, c, g);
}
#endif

template <class Seg, class T, class Coef>
SegmentFn<T, Coef> segment_for(Isa isa) {
#ifdef VDE_X86
  switch (isa) {
    case kAvx512: return &segment_avx512<Seg, T, Coef>;
    case kAvx2: return &segment_avx2<Seg, T, Coef>;
    default: break;
  }
#endif
  (void)isa;
  return &segment_base<Seg, T, Coef>;
}

// ---- parallel driver ----------------------------------------------------------------------------

// Calls segment(n, d0, d1) for row segments covering [0, N*D) once: chunks of whole 64-byte lines
// of T elements (no cache line is written by two threads), >= 1024 lines and ~8 per thread, handed
// out dynamically; a chunk walks its rows segment by segment.
template <class T, class Segment>
void for_each_row_segment(int64_t N, int64_t D, const Segment& segment) {
  constexpr int64_t per_line = 64 / sizeof(T);
  const int64_t total = N * D;
  const int64_t lines = (total + per_line - 1) / per_line;
  const int64_t chunk =
      std::max<int64_t>(1024, lines / (int64_t{8} * max_threads())) * per_line;
  const int64_t nchunks = (total + chunk - 1) / chunk;
  VDE_OMP(parallel for schedule(dynamic, 1) if (nchunks > 1))
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    const int64_t e1 = std::min(total, (ch + 1) * chunk);
    for (int64_t e = ch * chunk; e < e1;) {
      const int64_t n = e / D;
      const int64_t d0 = e - n * D;
      const int64_t d1 = std::min(D, d0 + (e1 - e));
      segment(n, d0, d1);
      e += d1 - d0;
    }
  }
}

}  // namespace step
}  // namespace cpu
}  // namespace vde
