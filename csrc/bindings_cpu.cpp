// vdengine._C: the CPU kernels, always built.
#include <string>

#include "bindings_common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace vde;

PYBIND11_MODULE(_C, m) {
  m.doc() = "vdengine CPU kernels (float32, bfloat16). Tensors are passed as data_ptr() addresses; "
            "dtype is the code of vdengine.ops._native.DTYPE_CODES.";

  m.def("posgn", [](int dtype, std::uintptr_t x, std::uintptr_t scale, std::uintptr_t shift,
                    std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t y, int64_t N,
                    int64_t C, int64_t HW, int64_t M, int64_t G, float eps, bool silu,
                    bool channels_last) {
    auto a = make_posgn(x, scale, shift, weight, bias, y, N, C, HW, M, G, eps, silu,
                        channels_last);
    py::gil_scoped_release release;
    posgn_cpu(static_cast<DType>(dtype), a);
  }, py::arg("dtype"), VDE_POSGN_ARGS, py::arg("channels_last"));

  m.def("temporal_attention",
        [](int dtype, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t bias,
           std::uintptr_t out, int64_t B, int64_t F, int64_t S, int64_t H, int64_t D,
           int64_t q_row, int64_t q_pix, int64_t k_row, int64_t k_pix, int64_t v_row,
           int64_t v_pix, float scale) {
          auto a = make_attention(q, k, v, bias, out, B, F, S, H, D, q_row, q_pix, k_row, k_pix,
                                  v_row, v_pix, scale);
          py::gil_scoped_release release;
          temporal_attention_cpu(static_cast<DType>(dtype), a);
        }, py::arg("dtype"), VDE_ATTENTION_ARGS);

  auto step = [](void (*kernel)(DType, const StepArgs&)) {
    return [kernel](int dtype, std::uintptr_t x, std::uintptr_t model_out, std::uintptr_t noise,
                    std::uintptr_t x0_prev, std::uintptr_t abar_t, std::uintptr_t abar_next,
                    std::uintptr_t abar_prev, int64_t coef_stride, std::uintptr_t x_out,
                    std::uintptr_t x0_out, int64_t N, int64_t D, float eta, int prediction,
                    bool has_guidance, float guidance_scale, std::uintptr_t guidance_frames,
                    int64_t frames, int64_t frame_inner, bool has_clip, float clip_sample) {
      auto a = make_step(x, model_out, noise, x0_prev, abar_t, abar_next, abar_prev, coef_stride,
                         x_out, x0_out, N, D, eta, prediction, has_guidance, guidance_scale,
                         guidance_frames, frames, frame_inner, has_clip, clip_sample);
      py::gil_scoped_release release;
      kernel(static_cast<DType>(dtype), a);
    };
  };
  m.def("ddim_step", step(&ddim_step_cpu), py::arg("dtype"), VDE_STEP_ARGS);
  m.def("dpmpp_2m_step", step(&dpmpp_2m_step_cpu), py::arg("dtype"), VDE_STEP_ARGS);
  m.def("euler_step", step(&euler_step_cpu), py::arg("dtype"), VDE_STEP_ARGS);

  m.def("group_norm", [](int dtype, std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias,
                         std::uintptr_t y, int64_t N, int64_t C, int64_t HW, int64_t G, int64_t F,
                         float eps, bool silu, bool channels_last) {
    auto a = make_group_norm(x, weight, bias, y, N, C, HW, G, F, eps, silu, channels_last);
    py::gil_scoped_release release;
    group_norm_cpu(static_cast<DType>(dtype), a);
  }, py::arg("dtype"), VDE_GROUP_NORM_ARGS, py::arg("channels_last"));

  m.def("geglu", [](int dtype, std::uintptr_t x, std::uintptr_t bias, std::uintptr_t y, int64_t N,
                    int64_t H) {
    auto a = make_geglu(x, bias, y, N, H);
    py::gil_scoped_release release;
    geglu_cpu(static_cast<DType>(dtype), a);
  }, py::arg("dtype"), VDE_GEGLU_ARGS);

  m.def("build_info", []() {
    py::dict info;
#ifdef _OPENMP
    info["openmp"] = true;
    info["openmp_version"] = _OPENMP;
    info["max_threads"] = omp_get_max_threads();
#else
    info["openmp"] = false;
#endif
#if defined(__clang__)
    info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info["compiler"] = std::string("gcc ") + __VERSION__;
#else
    info["compiler"] = std::string("unknown");
#endif
    info["cxx_standard"] = static_cast<long>(__cplusplus);
    return info;
  });
}
