// ddim_step: one fused DDIM update (Song et al. 2021), the math of vdengine.ops.reference.ddim_step
// (diffusers' DDIMScheduler.step), for x, noise, x0 [N, D] and model_out [N, D] or [2N, D].
//
// Algorithm, per element (fp32), with a = sqrt(abar_t), s = sqrt(1 - abar_t) of the element's row:
//   out    = guidance ? u + g*(c - u) : model_out                 (CFG halves combined first)
//   x0,eps = predict(x, out)          (epsilon | v | sample prediction)
//   x0     = clamp(x0, -clip, clip)   (optional; eps is not recomputed, as in diffusers)
//   sigma  = eta * sqrt((1 - abar_prev)/(1 - abar_t)) * sqrt(1 - abar_t/abar_prev)
//   x_prev = sqrt(abar_prev)*x0 + sqrt(max(1 - abar_prev - sigma^2, 0))*eps
//            (+ sigma*noise, only when eta > 0)
// The abar coefficients stay on the device (coef_stride 0: one value, 1: one per row): no host
// sync and no allocation, so the step can be captured in a CUDA graph.
//
// Kernel: one elementwise grid-stride pass over packs of V elements (V = 16 bytes / sizeof(T) when
// D % V == 0 and every pointer is 16-byte aligned, else V = 1; the pass and its launch are
// step_kernel / launch_step of step_common.cuh, shared with dpmpp_2m_step.cu, and DdimStep::pack
// below is the per-pack work). A pack never straddles a row, so each thread derives its row from
// the element index (a division, only when coef_stride is 1) and recomputes the row's
// coefficients: a few sqrt per pack, cheap next to the memory traffic.
//
// Bytes moved per element: read x, model_out (x2 with guidance), noise when eta > 0; write x_out
// and x0_out when given: 3 to 5 x sizeof(T), plus the abar arrays (N floats, L1/L2 hits).
// Expected bound: HBM bandwidth (a handful of flops per element).
//
// No __restrict__ and no non-coherent loads: x_out may alias x (an in-place step); each element is
// read before it is written by the same thread, which is safe.
#include "cuda/step_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

struct DdimStep {
  template <typename T, int V>
  static __device__ __forceinline__ void pack(const StepArgs& a, int64_t e, int64_t ci) {
    const bool add_noise = a.eta > 0.f;

    // Row coefficients, in the order reference.ddim_step evaluates them.
    const float ab_t = a.abar_t[ci];
    const float ab_p = a.abar_next[ci];
    const float sq_t = sqrtf(ab_t), sq_1mt = sqrtf(1.f - ab_t);
    const float sigma = a.eta * sqrtf((1.f - ab_p) / (1.f - ab_t)) * sqrtf(1.f - ab_t / ab_p);
    const float c_x0 = sqrtf(ab_p);
    const float dir2 = 1.f - ab_p - sigma * sigma;
    const float c_eps = sqrtf(dir2 < 0.f ? 0.f : dir2);  // clamp_min(0); NaN stays NaN

    float xv[V], out[V];
    load_pack<T, V>(static_cast<const T*>(a.x) + e, xv);
    load_model_out<T, V>(static_cast<const T*>(a.model_out), e, a, out);
    float nz[V] = {};  // read only when add_noise
    if (add_noise) load_pack<T, V>(static_cast<const T*>(a.noise) + e, nz);

    float xp[V], x0v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float x0, eps;
      predict_x0_eps(a.prediction, xv[i], out[i], sq_t, sq_1mt, x0, eps);
      if (a.has_clip) x0 = clamp_sym(x0, a.clip_sample);
      float v = c_x0 * x0 + c_eps * eps;
      if (add_noise) v = v + sigma * nz[i];
      xp[i] = v;
      x0v[i] = x0;
    }
    store_pack<T, V>(static_cast<T*>(a.x_out) + e, xp);
    if (a.x0_out) store_pack<T, V>(static_cast<T*>(a.x0_out) + e, x0v);
  }
};

}  // namespace

void ddim_step_cuda(DType dtype, const StepArgs& a, void* stream) {
  const char* op = "ddim_step";
  if (!validate_step(dtype, a, op)) return;
  if (a.eta > 0.f && !a.noise) {
    throw std::invalid_argument("ddim_step: noise is required when eta > 0");
  }
  launch_step<DdimStep>(dtype, a, stream, op, {a.x, a.model_out, a.x_out, a.noise, a.x0_out});
}

}  // namespace vde
