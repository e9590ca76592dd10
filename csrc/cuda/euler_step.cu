// euler_step: one fused Euler step of the probability-flow ODE in sigma (Karras et al. 2022,
// Alg. 1 without churn), the math of vdengine.ops.reference.euler_step (diffusers'
// EulerDiscreteScheduler.step with s_churn = 0), for x, x0 [N, D] and model_out [N, D] or [2N, D].
//
// Algorithm, per element (fp32), with the row's sigma and sigma_next:
//   out    = guidance ? u + g*(c - u) : model_out                 (CFG halves combined first)
//   x0     = x - sigma*out                                       (epsilon)
//            out*(-sigma/sqrt(sigma^2+1)) + x/(sigma^2+1)        (v: EDM c_out, c_skip)
//            out                                                 (sample)
//   x0     = clamp(x0, -clip, clip)                              (optional)
//   x_next = x + ((x - x0)/sigma)*(sigma_next - sigma)
// The sigma coefficients stay on the device (coef_stride 0: one value, 1: one per row): no host
// sync and no allocation, so the step can be captured in a CUDA graph.
//
// Kernel: one elementwise grid-stride pass over packs of V elements (V = 16 bytes / sizeof(T) when
// D % V == 0 and every pointer is 16-byte aligned, else V = 1; step_kernel / launch_step of
// step_common.cuh, shared with ddim_step.cu and dpmpp_2m_step.cu, around EulerStep::pack below).
// Each thread derives its row from the element index and recomputes the row's coefficients (one
// sqrt per pack).
//
// Bytes moved per element: read x, model_out (x2 with guidance); write x_out and x0_out when
// given: 2 to 4 x sizeof(T), plus the sigma arrays (L1/L2 hits).
// Expected bound: HBM bandwidth (a handful of flops per element).
//
// No __restrict__ and no non-coherent loads: x_out may alias x (an in-place step); each element is
// read before it is written by the same thread, which is safe.
#include "cuda/step_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

struct EulerStep {
  template <typename T, int V>
  static __device__ __forceinline__ void pack(const StepArgs& a, int64_t e, int64_t ci) {
    // Row coefficients, in the order reference.euler_step evaluates them.
    const float sigma = a.abar_t[ci];
    const float dt = a.abar_next[ci] - sigma;
    const float den = sigma * sigma + 1.f;
    const float c_out = -sigma / sqrtf(den);

    float xv[V], out[V];
    load_pack<T, V>(static_cast<const T*>(a.x) + e, xv);
    load_model_out<T, V>(static_cast<const T*>(a.model_out), e, a, out);

    float xn[V], x0v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float x0;
      if (a.prediction == Prediction::epsilon) {
        x0 = xv[i] - sigma * out[i];
      } else if (a.prediction == Prediction::v) {
        x0 = out[i] * c_out + xv[i] / den;
      } else {
        x0 = out[i];
      }
      if (a.has_clip) x0 = clamp_sym(x0, a.clip_sample);
      const float deriv = (xv[i] - x0) / sigma;
      xn[i] = xv[i] + deriv * dt;
      x0v[i] = x0;
    }
    store_pack<T, V>(static_cast<T*>(a.x_out) + e, xn);
    if (a.x0_out) store_pack<T, V>(static_cast<T*>(a.x0_out) + e, x0v);
  }
};

}  // namespace

void euler_step_cuda(DType dtype, const StepArgs& a, void* stream) {
  const char* op = "euler_step";
  if (!validate_step(dtype, a, op)) return;
  launch_step<EulerStep>(dtype, a, stream, op, {a.x, a.model_out, a.x_out, a.x0_out});
}

}  // namespace vde
