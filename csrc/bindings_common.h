// Helpers shared by the CPU and CUDA pybind11 modules: tensors arrive as integer addresses.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/ops.h"

namespace vde {

inline const void* cptr(std::uintptr_t p) { return reinterpret_cast<const void*>(p); }
inline void* mptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

inline PosGNArgs make_posgn(std::uintptr_t x, std::uintptr_t scale, std::uintptr_t shift,
                            std::uintptr_t weight, std::uintptr_t bias, std::uintptr_t y,
                            int64_t N, int64_t C, int64_t HW, int64_t M, int64_t G, float eps,
                            bool silu, bool channels_last = false) {
  return PosGNArgs{cptr(x), cptr(scale), cptr(shift), cptr(weight), cptr(bias), mptr(y),
                   N, C, HW, M, G, eps, silu, channels_last};
}

inline AttentionArgs make_attention(std::uintptr_t q, std::uintptr_t k, std::uintptr_t v,
                                    std::uintptr_t bias, std::uintptr_t out, int64_t B,
                                    int64_t F, int64_t S, int64_t H, int64_t D,
                                    int64_t q_row, int64_t q_pix, int64_t k_row, int64_t k_pix,
                                    int64_t v_row, int64_t v_pix, float scale) {
  return AttentionArgs{cptr(q), cptr(k), cptr(v), static_cast<const float*>(cptr(bias)),
                       mptr(out), B, F, S, H, D, q_row, q_pix, k_row, k_pix, v_row, v_pix, scale};
}

inline StepArgs make_step(std::uintptr_t x, std::uintptr_t model_out, std::uintptr_t noise,
                          std::uintptr_t x0_prev, std::uintptr_t abar_t, std::uintptr_t abar_next,
                          std::uintptr_t abar_prev, int64_t coef_stride, std::uintptr_t x_out,
                          std::uintptr_t x0_out, int64_t N, int64_t D, float eta, int prediction,
                          bool has_guidance, float guidance_scale,
                          std::uintptr_t guidance_frames, int64_t frames, int64_t frame_inner,
                          bool has_clip, float clip_sample) {
  return StepArgs{cptr(x), cptr(model_out), cptr(noise), cptr(x0_prev),
                  static_cast<const float*>(cptr(abar_t)),
                  static_cast<const float*>(cptr(abar_next)),
                  static_cast<const float*>(cptr(abar_prev)), coef_stride, mptr(x_out),
                  mptr(x0_out), N, D, eta, static_cast<Prediction>(prediction), has_guidance,
                  guidance_scale, static_cast<const float*>(cptr(guidance_frames)), frames,
                  frame_inner, has_clip, clip_sample};
}

inline GroupNormArgs make_group_norm(std::uintptr_t x, std::uintptr_t weight, std::uintptr_t bias,
                                     std::uintptr_t y, int64_t N, int64_t C, int64_t HW, int64_t G,
                                     int64_t F, float eps, bool silu,
                                     bool channels_last = false) {
  return GroupNormArgs{cptr(x), cptr(weight), cptr(bias), mptr(y), N, C, HW, G, F, eps, silu,
                       channels_last};
}

inline GegluArgs make_geglu(std::uintptr_t x, std::uintptr_t bias, std::uintptr_t y, int64_t N,
                           int64_t H) {
  return GegluArgs{cptr(x), cptr(bias), mptr(y), N, H};
}

namespace py = pybind11;

// The argument lists of the bindings, shared by both modules so the Python side calls them alike.
#define VDE_POSGN_ARGS                                                                        \
  py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("weight"), py::arg("bias"),       \
      py::arg("y"), py::arg("N"), py::arg("C"), py::arg("HW"), py::arg("M"), py::arg("G"),    \
      py::arg("eps"), py::arg("silu")
#define VDE_ATTENTION_ARGS                                                                    \
  py::arg("q"), py::arg("k"), py::arg("v"), py::arg("bias"), py::arg("out"), py::arg("B"),    \
      py::arg("F"), py::arg("S"), py::arg("H"), py::arg("D"), py::arg("q_row"),               \
      py::arg("q_pix"), py::arg("k_row"), py::arg("k_pix"), py::arg("v_row"),                 \
      py::arg("v_pix"), py::arg("scale")
#define VDE_STEP_ARGS                                                                         \
  py::arg("x"), py::arg("model_out"), py::arg("noise"), py::arg("x0_prev"),                   \
      py::arg("abar_t"), py::arg("abar_next"), py::arg("abar_prev"), py::arg("coef_stride"),  \
      py::arg("x_out"), py::arg("x0_out"), py::arg("N"), py::arg("D"), py::arg("eta"),        \
      py::arg("prediction"), py::arg("has_guidance"), py::arg("guidance_scale"),              \
      py::arg("guidance_frames"), py::arg("frames"), py::arg("frame_inner"),                  \
      py::arg("has_clip"), py::arg("clip_sample")

#define VDE_GROUP_NORM_ARGS                                                                   \
  py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("y"), py::arg("N"), py::arg("C"), \
      py::arg("HW"), py::arg("G"), py::arg("F"), py::arg("eps"), py::arg("silu")

#define VDE_GEGLU_ARGS py::arg("x"), py::arg("bias"), py::arg("y"), py::arg("N"), py::arg("H")

}  // namespace vde
