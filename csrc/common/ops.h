// vdengine kernel launchers: the contract between the bindings and the kernels.
//
// Raw pointers and sizes only (no libtorch). The Python wrappers in vdengine/ops/ validate every
// argument before calling, so launchers may assume valid shapes; they still check what would
// otherwise be undefined behaviour and throw std::invalid_argument.
//
// Layouts (all row-major, contiguous unless a stride is given):
//   posgn:               x, y [N, C, HW]; scale, shift [M, C, HW] (row n uses n % M);
//                        weight, bias [C] or nullptr. channels_last (CPU only): x, y [N, HW, C],
//                        scale, shift [M, HW, C] (torch.channels_last strides); also group_norm.
//   temporal_attention:  q, k, v: element (row r, pixel s, channel c) at r*row_stride + s*pix_stride + c,
//                        rows r = b*F + f, C = H*D channels; out contiguous [B*F, S, C];
//                        bias [F, F] float32 or nullptr.
//   ddim / dpmpp / euler: x, noise, x0 [N, D]; model_out [N, D] or [2N, D] (uncond rows first)
//                        when has_guidance; abar_* float32 of length N (coef_stride 1) or 1 (0).
//                        euler reads σ_t from abar_t and σ_next from abar_next.
//                        guidance_frames: float32 [frames] per-frame scales or nullptr (then
//                        guidance_scale): element d of a row [D = frames·frame_inner] is in
//                        frame d / frame_inner (samples laid out [N, F, ...]).
#pragma once

#include <cstdint>

namespace vde {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };
enum class Prediction : int { epsilon = 0, v = 1, sample = 2 };

struct PosGNArgs {
  const void* x;
  const void* scale;
  const void* shift;
  const void* weight;  // nullable
  const void* bias;    // nullable
  void* y;
  int64_t N, C, HW, M, G;
  float eps;
  bool silu;
  bool channels_last = false;  // CPU only: x, scale, shift, y [rows, HW, C]
};

struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  const float* bias;  // nullable, [F, F]
  void* out;
  int64_t B, F, S, H, D;
  int64_t q_row_stride, q_pix_stride;
  int64_t k_row_stride, k_pix_stride;
  int64_t v_row_stride, v_pix_stride;
  float scale;
};

struct StepArgs {
  const void* x;
  const void* model_out;
  const void* noise;      // ddim only, nullable (required when eta > 0)
  const void* x0_prev;    // dpmpp only, nullable (first-order step)
  const float* abar_t;     // euler: σ_t
  const float* abar_next;  // ᾱ_prev for DDIM (the timestep stepped to); euler: σ_next
  const float* abar_prev;  // dpmpp only: ᾱ where x0_prev was predicted; nullable
  int64_t coef_stride;     // 1: one coefficient per row; 0: one for all rows
  void* x_out;
  void* x0_out;            // nullable for ddim and euler, required for dpmpp
  int64_t N, D;
  float eta;
  Prediction prediction;
  bool has_guidance;
  float guidance_scale;
  const float* guidance_frames;  // nullable: per-frame scales [frames] replace guidance_scale
  int64_t frames, frame_inner;   // with guidance_frames: D = frames * frame_inner
  bool has_clip;
  float clip_sample;
};

// Group normalization whose statistics span F consecutive rows (the frames of one video):
// x, y [N, C, HW], N = B*F; weight, bias [C] or nullptr. F = 1: per-row GroupNorm.
struct GroupNormArgs {
  const void* x;
  const void* weight;  // nullable
  const void* bias;    // nullable
  void* y;
  int64_t N, C, HW, G, F;
  float eps;
  bool silu;
  bool channels_last = false;  // CPU only: x, y [N, HW, C]
};

// GEGLU of a projection output without its bias: x [N, 2H], y [N, H], bias [2H] or nullptr.
struct GegluArgs {
  const void* x;
  const void* bias;  // nullable
  void* y;
  int64_t N, H;
};

// CPU kernels: float32 and bfloat16 (float32 arithmetic, fp32/fp64 accumulation); another dtype
// throws std::invalid_argument.
void posgn_cpu(DType dtype, const PosGNArgs& a);
void temporal_attention_cpu(DType dtype, const AttentionArgs& a);
void ddim_step_cpu(DType dtype, const StepArgs& a);
void dpmpp_2m_step_cpu(DType dtype, const StepArgs& a);
void euler_step_cpu(DType dtype, const StepArgs& a);
void group_norm_cpu(DType dtype, const GroupNormArgs& a);
void geglu_cpu(DType dtype, const GegluArgs& a);

// CUDA kernels: float32, float16, bfloat16 (fp32 accumulation). `stream` is a cudaStream_t.
void posgn_cuda(DType dtype, const PosGNArgs& a, void* stream);
void temporal_attention_cuda(DType dtype, const AttentionArgs& a, void* stream);
void ddim_step_cuda(DType dtype, const StepArgs& a, void* stream);
void dpmpp_2m_step_cuda(DType dtype, const StepArgs& a, void* stream);
void euler_step_cuda(DType dtype, const StepArgs& a, void* stream);
void group_norm_cuda(DType dtype, const GroupNormArgs& a, void* stream);
void geglu_cuda(DType dtype, const GegluArgs& a, void* stream);

}  // namespace vde
