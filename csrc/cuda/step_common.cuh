// Helpers shared by the diffusion step CUDA kernels (ddim_step.cu, dpmpp_2m_step.cu,
// euler_step.cu): host-side argument checks, the grid-stride kernel over packs of V elements and
// its launcher (dtype dispatch, 128-bit packs when alignment allows), and the elementwise pieces
// the steps share (guidance, x0/eps by prediction type, clip).
//
// A step is a struct with one device function, the work on the pack of V elements at element e
// (row-major [N, D]) whose row coefficients are at index ci of the abar arrays:
//   struct MyStep {
//     template <typename T, int V>
//     static __device__ __forceinline__ void pack(const StepArgs& a, int64_t e, int64_t ci);
//   };
// launched with launch_step<MyStep>(dtype, a, stream, op, {tensors that must be 16-byte aligned
// for 128-bit packs}).
#ifndef VDE_CUDA_STEP_COMMON_CUH
#define VDE_CUDA_STEP_COMMON_CUH

#include <initializer_list>

#include "cuda/cuda_common.cuh"

namespace vde {
namespace cu {

// Host-side checks shared by the step launchers; returns false when there is nothing to do.
inline bool validate_step(DType dtype, const StepArgs& a, const char* op) {
  dispatch_dtype(dtype, op, [](auto) {});  // throws on an unknown dtype code
  const int pred = static_cast<int>(a.prediction);
  if (pred < 0 || pred > 2) {
    throw std::invalid_argument(std::string(op) + ": unknown prediction code " +
                                std::to_string(pred));
  }
  if (a.coef_stride != 0 && a.coef_stride != 1) {
    throw std::invalid_argument(std::string(op) + ": coef_stride must be 0 or 1, got " +
                                std::to_string(a.coef_stride));
  }
  if (a.guidance_frames && (!a.has_guidance || a.frames <= 0 || a.frame_inner <= 0 ||
                            a.frames * a.frame_inner != a.D)) {
    throw std::invalid_argument(std::string(op) +
                                ": per-frame guidance needs has_guidance and frames * frame_inner "
                                "== D");
  }
  if (a.N < 0 || a.D < 0) throw std::invalid_argument(std::string(op) + ": negative N or D");
  if (a.N == 0 || a.D == 0) return false;
  if (!a.x || !a.model_out || !a.x_out || !a.abar_t || !a.abar_next) {
    throw std::invalid_argument(std::string(op) +
                                ": x, model_out, x_out, abar_t and abar_next are required");
  }
  return true;
}

// ---- elementwise pieces -------------------------------------------------------------------------

// Classifier-free guidance on [uncond; cond] rows: u + s*(c - u), as reference.combine_guidance.
// The V elements of model output at element e (row-major [N, D]), combined when has_guidance
// (the cond row of element e sits N*D elements later). The scale is guidance_scale, or with
// guidance_frames the scale of element e's frame ((e % D) / frame_inner); a pack never straddles
// a frame (launch_step ensures frame_inner % V == 0).
template <typename T, int V>
__device__ __forceinline__ void load_model_out(const T* mo, int64_t e, const StepArgs& a,
                                               float (&out)[V]) {
  load_pack<T, V>(mo + e, out);
  if (a.has_guidance) {
    const float g =
        a.guidance_frames ? a.guidance_frames[(e % a.D) / a.frame_inner] : a.guidance_scale;
    float c[V];
    load_pack<T, V>(mo + a.N * a.D + e, c);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = out[i] + g * (c[i] - out[i]);
  }
}

// reference.predict_x0_eps with a = sqrt(abar), s = sqrt(1 - abar).
__device__ __forceinline__ void predict_x0_eps(Prediction pred, float x, float out, float a,
                                               float s, float& x0, float& eps) {
  if (pred == Prediction::epsilon) {
    eps = out;
    x0 = (x - s * eps) / a;
  } else if (pred == Prediction::v) {
    x0 = a * x - s * out;
    eps = a * out + s * x;
  } else {  // sample
    x0 = out;
    eps = (x - a * x0) / s;
  }
}

// torch.clamp(v, -c, c): NaN stays NaN (fminf/fmaxf would turn it into a bound).
__device__ __forceinline__ float clamp_sym(float v, float c) {
  return v < -c ? -c : (v > c ? c : v);
}

// ---- kernel and launcher ------------------------------------------------------------------------

constexpr int kStepThreads = 256;

// One elementwise grid-stride pass over the npacks packs of V elements of [0, N*D). A pack never
// straddles a row (V = 1 or D % V == 0), so its coefficient row is e / D (when coef_stride is 1).
template <class Step, typename T, int V>
__global__ void __launch_bounds__(kStepThreads) step_kernel(const StepArgs a,
                                                            const int64_t npacks) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t pk = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pk < npacks;
       pk += stride) {
    const int64_t e = pk * V;
    const int64_t ci = a.coef_stride ? e / a.D : 0;  // this pack's row (D % V == 0)
    Step::template pack<T, V>(a, e, ci);
  }
}

template <class Step, typename T, int V>
void launch_step_packs(const StepArgs& a, cudaStream_t stream, const char* op) {
  const int64_t npacks = a.N * a.D / V;
  const unsigned blocks = grid_stride_blocks(npacks, kStepThreads, op);
  step_kernel<Step, T, V><<<blocks, kStepThreads, 0, stream>>>(a, npacks);
  check_launch(op, stream);
}

// Runs Step over [0, N*D) in `dtype`: 128-bit packs when no pack straddles a row (D % V == 0) or,
// under per-frame guidance, a frame (frame_inner % V == 0), and every non-null pointer in
// `tensors` is 16-byte aligned (the cond half of model_out then is too: N*D*sizeof(T) is a
// multiple of 16), else one element per thread.
template <class Step>
void launch_step(DType dtype, const StepArgs& a, void* stream, const char* op,
                 std::initializer_list<const void*> tensors) {
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = vec16<T>();
    bool vec = a.D % V == 0 && (!a.guidance_frames || a.frame_inner % V == 0);
    for (const void* p : tensors) vec = vec && (!p || aligned_to(p, 16));
    if (vec) {
      launch_step_packs<Step, T, V>(a, st, op);
    } else {
      launch_step_packs<Step, T, 1>(a, st, op);
    }
  });
}

}  // namespace cu
}  // namespace vde

#endif  // VDE_CUDA_STEP_COMMON_CUH
