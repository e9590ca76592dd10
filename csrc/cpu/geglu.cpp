// GEGLU (Shazeer 2020, the activation of diffusers' FeedForward), float32 and bfloat16 CPU kernel
// (bfloat16 storage, float32 math, one rounding per output).
//
//   y[n, j] = (x[n, j] + b[j]) * gelu(x[n, H + j] + b[H + j]),   j < H,  x [N, 2H], y [N, H],
//   gelu(g) = g/2 * (1 + erf(g/√2))  (exact GELU, as F.gelu's default)
//
// It takes the projection's output *without* its bias (a plain GEMM: PyTorch's CPU addmm first
// copies the bias into the whole [N, 2H] output) and adds the bias here, so one pass replaces
// the bias fill, chunk, gelu and multiply: read x once (8H bytes per row), write y (4H).
//
// erf: Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), the formula of PyTorch's vectorized CPU
//   erf, with the inlined exp polynomial (Cephes expf): every loop is `omp simd`, compiled for
//   AVX-512 / AVX2+FMA / baseline and picked at run time.
// Parallel over rows in contiguous chunks (dynamic, ~16 per thread); bound: memory bandwidth
//   for H >= 256 (~30 flops per output against 12 bytes), compute near it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/ops.h"
#include "cpu/bf16.h"
#include "cpu/cpu_common.h"

namespace vde {
namespace {

using namespace vde::cpu;

// exp(x) for x <= 0 (Cephes expf polynomial, ~1 ulp); x < -87.33 gives 0.
VDE_INLINE float exp_nonpos(float x) {
  const float xc = x >= -87.33f ? x : -87.33f;
  const float t = xc * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float z = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return x < -87.33f ? 0.0f : p * two_n;
}

// gelu(g) = g/2 * (1 + erf(g/√2)), erf by A&S 7.1.26: 1 - t·r(t)·exp(-z²), t = 1/(1 + p·|z|).
VDE_INLINE float gelu(float g) {
  const float z = g * 0.70710678118654752f;
  const float az = z < 0.0f ? -z : z;
  const float t = 1.0f / (0.3275911f * az + 1.0f);
  float r = 1.061405429f * t - 1.453152027f;
  r = r * t + 1.421413741f;
  r = r * t - 0.284496736f;
  r = r * t + 0.254829592f;
  const float e = 1.0f - r * t * exp_nonpos(-z * z);  // erf(|z|)
  const float erf_z = z < 0.0f ? -e : e;
  return 0.5f * g * (1.0f + erf_z);
}

template <int ISA, class T>
VDE_INLINE void rows(const T* x, const T* b, T* y, int64_t H, int64_t r0, int64_t r1) {
  for (int64_t n = r0; n < r1; ++n) {
    const T* xa = x + n * 2 * H;
    const T* xg = xa + H;
    T* yr = y + n * H;
    if (b) {
      const T* bg = b + H;
      VDE_OMP(simd)
      for (int64_t j = 0; j < H; ++j) {
        const float h = to_float(xa[j]) + to_float(b[j]);
        yr[j] = from_float<T>(h * gelu(to_float(xg[j]) + to_float(bg[j])));
      }
    } else {
      VDE_OMP(simd)
      for (int64_t j = 0; j < H; ++j)
        yr[j] = from_float<T>(to_float(xa[j]) * gelu(to_float(xg[j])));
    }
  }
}

template <class T>
using RowsFn = void (*)(const T*, const T*, T*, int64_t, int64_t, int64_t);

template <class T>
void rows_base(const T* x, const T* b, T* y, int64_t H, int64_t r0, int64_t r1) {
  rows<kBase>(x, b, y, H, r0, r1);
}
#ifdef VDE_X86
template <class T>
VDE_TARGET_AVX2 void rows_avx2(const T* x, const T* b, T* y, int64_t H, int64_t r0, int64_t r1) {
  rows<kAvx2>(x, b, y, H, r0, r1);
}
template <class T>
VDE_TARGET_AVX512_ZMM void rows_avx512(const T* x, const T* b, T* y, int64_t H, int64_t r0,
                                       int64_t r1) {
  rows<kAvx512>(x, b, y, H, r0, r1);
}
#endif

template <class T>
RowsFn<T> rows_kernel() {
#ifdef VDE_X86
  switch (cpu_isa()) {
    case kAvx512: return rows_avx512<T>;
    case kAvx2: return rows_avx2<T>;
    default: break;
  }
#endif
  return rows_base<T>;
}

}  // namespace

void geglu_cpu(DType dtype, const GegluArgs& a) {
  if (!a.x || !a.y) throw std::invalid_argument("geglu_cpu: x and y must be non-null");
  if (a.N < 0 || a.H <= 0)
    throw std::invalid_argument("geglu_cpu: N must be >= 0 and H positive, got N=" +
                                std::to_string(a.N) + " H=" + std::to_string(a.H));
  with_storage(dtype, "geglu_cpu", [&](auto storage) {
    using T = decltype(storage);
    const T* x = static_cast<const T*>(a.x);
    const T* b = static_cast<const T*>(a.bias);
    T* y = static_cast<T*>(a.y);
    const RowsFn<T> fn = rows_kernel<T>();
    const int nt = max_threads();
    const bool parallel = nt > 1 && a.N * a.H >= (int64_t{1} << 14);
    const int64_t chunk = std::max<int64_t>(1, a.N / (int64_t{16} * nt));
    const int64_t nchunks = (a.N + chunk - 1) / chunk;
    VDE_OMP(parallel for schedule(dynamic, 1) if (parallel))
    for (int64_t c = 0; c < nchunks; ++c)
      fn(x, b, y, a.H, c * chunk, std::min(a.N, (c + 1) * chunk));
  });
}

}  // namespace vde
