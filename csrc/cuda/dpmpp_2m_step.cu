// dpmpp_2m_step: one fused DPM-Solver++(2M) update (Lu et al. 2022; data prediction, midpoint
// form), the math of vdengine.ops.reference.dpmpp_2m_step, for x, x0_prev, x0 [N, D] and
// model_out [N, D] or [2N, D].
//
// Algorithm, per element (fp32), with a = sqrt(abar), s = sqrt(1 - abar),
// lambda(abar) = 0.5*(log(abar) - log(1 - abar)) and the row's abar_t, abar_next, abar_prev:
//   out    = guidance ? u + g*(c - u) : model_out
//   x0     = predict(x, out), clamped when clip is set        -> written to x0_out (always)
//   e^{-h} = (s_next*a_t)/(a_next*s_t)
//   D      = x0 + (x0 - x0_prev)/(2r), r = (lambda_t - lambda_prev)/(lambda_next - lambda_t),
//            only where x0_prev is given AND abar_next < 1 (s_next > 0); D = x0 otherwise (first
//            order, and the final step to sigma = 0, as diffusers does)
//   x_next = (s_next/s_t)*x + a_next*(1 - e^{-h})*D
// The abar coefficients stay on the device (coef_stride 0: one value, 1: one per row): no host
// sync and no allocation, so the step can be captured in a CUDA graph.
//
// Kernel: one elementwise grid-stride pass over packs of V elements (V = 16 bytes / sizeof(T) when
// D % V == 0 and every pointer is 16-byte aligned, else V = 1; step_kernel / launch_step of
// step_common.cuh, shared with ddim_step.cu, around DpmppStep::pack below). Each thread derives its
// row from the element index and recomputes the row's coefficients (a few sqrt/log per pack).
//
// Bytes moved per element: read x, model_out (x2 with guidance), x0_prev (second order); write
// x_out and x0_out: 3 to 5 x sizeof(T), plus the abar arrays (L1/L2 hits).
// Expected bound: HBM bandwidth.
//
// No __restrict__ and no non-coherent loads: x_out may alias x and x0_out may alias x0_prev (an
// in-place step); each element is read before it is written by the same thread, which is safe.
#include "cuda/step_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

__device__ __forceinline__ float dpm_lambda(float ab) { return 0.5f * (logf(ab) - logf(1.f - ab)); }

struct DpmppStep {
  template <typename T, int V>
  static __device__ __forceinline__ void pack(const StepArgs& a, int64_t e, int64_t ci) {
    const T* x0_prev = static_cast<const T*>(a.x0_prev);

    // Row coefficients, in the order reference.dpmpp_2m_step evaluates them.
    const float ab_t = a.abar_t[ci];
    const float ab_n = a.abar_next[ci];
    const float a_t = sqrtf(ab_t), s_t = sqrtf(1.f - ab_t);
    const float a_n = sqrtf(ab_n), s_n = sqrtf(1.f - ab_n);
    const float exp_neg_h = (s_n * a_t) / (a_n * s_t);
    const float c_x = s_n / s_t;
    const float c_d = a_n * (1.f - exp_neg_h);
    const bool second = x0_prev != nullptr && s_n > 0.f;
    float two_r = 1.f;
    if (second) {
      const float lam_t = dpm_lambda(ab_t);
      const float h = dpm_lambda(ab_n) - lam_t;
      const float r = (lam_t - dpm_lambda(a.abar_prev[ci])) / h;
      two_r = 2.f * r;
    }

    float xv[V], out[V];
    load_pack<T, V>(static_cast<const T*>(a.x) + e, xv);
    load_model_out<T, V>(static_cast<const T*>(a.model_out), e, a, out);
    float xp0[V] = {};  // read only when second
    if (second) load_pack<T, V>(x0_prev + e, xp0);

    float xn[V], x0v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float x0, eps;
      predict_x0_eps(a.prediction, xv[i], out[i], a_t, s_t, x0, eps);
      if (a.has_clip) x0 = clamp_sym(x0, a.clip_sample);
      const float d = second ? x0 + (x0 - xp0[i]) / two_r : x0;
      xn[i] = c_x * xv[i] + c_d * d;
      x0v[i] = x0;
    }
    store_pack<T, V>(static_cast<T*>(a.x_out) + e, xn);
    store_pack<T, V>(static_cast<T*>(a.x0_out) + e, x0v);
  }
};

}  // namespace

void dpmpp_2m_step_cuda(DType dtype, const StepArgs& a, void* stream) {
  const char* op = "dpmpp_2m_step";
  if (!validate_step(dtype, a, op)) return;
  if (!a.x0_out) throw std::invalid_argument("dpmpp_2m_step: x0_out is required");
  if (a.x0_prev && !a.abar_prev) {
    throw std::invalid_argument("dpmpp_2m_step: abar_prev is required with x0_prev");
  }
  launch_step<DpmppStep>(dtype, a, stream, op,
                         {a.x, a.model_out, a.x_out, a.x0_out, a.x0_prev});
}

}  // namespace vde
