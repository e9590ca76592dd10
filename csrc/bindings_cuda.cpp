// vdengine._C_cuda: the CUDA kernels, built when a CUDA compiler is found. Loaded lazily by
// vdengine/ops/_native.py so that `import vdengine` never needs a GPU driver.
#include <string>

#include "bindings_common.h"

namespace py = pybind11;
using namespace vde;

extern "C++" namespace vde {
int cuda_runtime_version();
int cuda_device_count();  // -1 when the driver cannot be reached
}

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "vdengine CUDA kernels (float32/float16/bfloat16). Addresses are device pointers.";

  m.def("posgn", [](int dtype, std::uintptr_t x, std::uintptr_t scale, std::uintptr_t shift,
                    std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t y, int64_t N,
                    int64_t C, int64_t HW, int64_t M, int64_t G, float eps, bool silu,
                    std::uintptr_t stream) {
    auto a = make_posgn(x, scale, shift, weight, bias, y, N, C, HW, M, G, eps, silu);
    posgn_cuda(static_cast<DType>(dtype), a, mptr(stream));
  }, py::arg("dtype"), VDE_POSGN_ARGS, py::arg("stream"));

  m.def("temporal_attention",
        [](int dtype, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t bias,
           std::uintptr_t out, int64_t B, int64_t F, int64_t S, int64_t H, int64_t D,
           int64_t q_row, int64_t q_pix, int64_t k_row, int64_t k_pix, int64_t v_row,
           int64_t v_pix, float scale, std::uintptr_t stream) {
          auto a = make_attention(q, k, v, bias, out, B, F, S, H, D, q_row, q_pix, k_row, k_pix,
                                  v_row, v_pix, scale);
          temporal_attention_cuda(static_cast<DType>(dtype), a, mptr(stream));
        }, py::arg("dtype"), VDE_ATTENTION_ARGS, py::arg("stream"));

  auto step = [](void (*kernel)(DType, const StepArgs&, void*)) {
    return [kernel](int dtype, std::uintptr_t x, std::uintptr_t model_out, std::uintptr_t noise,
                    std::uintptr_t x0_prev, std::uintptr_t abar_t, std::uintptr_t abar_next,
                    std::uintptr_t abar_prev, int64_t coef_stride, std::uintptr_t x_out,
                    std::uintptr_t x0_out, int64_t N, int64_t D, float eta, int prediction,
                    bool has_guidance, float guidance_scale, std::uintptr_t guidance_frames,
                    int64_t frames, int64_t frame_inner, bool has_clip, float clip_sample,
                    std::uintptr_t stream) {
      auto a = make_step(x, model_out, noise, x0_prev, abar_t, abar_next, abar_prev, coef_stride,
                         x_out, x0_out, N, D, eta, prediction, has_guidance, guidance_scale,
                         guidance_frames, frames, frame_inner, has_clip, clip_sample);
      kernel(static_cast<DType>(dtype), a, mptr(stream));
    };
  };
  m.def("ddim_step", step(&ddim_step_cuda), py::arg("dtype"), VDE_STEP_ARGS, py::arg("stream"));
  m.def("dpmpp_2m_step", step(&dpmpp_2m_step_cuda), py::arg("dtype"), VDE_STEP_ARGS,
        py::arg("stream"));
  m.def("euler_step", step(&euler_step_cuda), py::arg("dtype"), VDE_STEP_ARGS,
        py::arg("stream"));

  m.def("build_info", []() {
    py::dict info;
    info["cuda_runtime_version"] = cuda_runtime_version();
    info["archs"] = std::string(VDENGINE_CUDA_ARCHS);
    return info;
  });
  m.def("device_count", &cuda_device_count);
}
