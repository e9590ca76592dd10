// geglu: GEGLU of a projection output without its bias, as vdengine.ops.reference.geglu:
//   y[n, j] = (x[n, j] + b[j]) * gelu(x[n, H + j] + b[H + j]),  x [N, 2H], y [N, H], b [2H] or null,
//   gelu exact (erff), fp32 arithmetic, stored in x's dtype.
// Kernel: grid-stride elementwise over the N*H outputs, V outputs per thread-step (16-byte packs)
// when H % V == 0 and x, y, b are 16-byte aligned, scalar otherwise.
// Bytes moved: read x once (2H elements per row), write y once (H): memory bound.
#include "cuda/cuda_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

__device__ __forceinline__ float gelu(float g) {
  return 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
}

template <typename T, int V>
__global__ void geglu_kernel(const T* __restrict__ x, const T* __restrict__ b, T* __restrict__ y,
                             const int64_t N, const int64_t H) {
  const int64_t packs = N * H / V;
  const int64_t hp = H / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / hp, j = (i % hp) * V;
    float a[V], g[V], out[V];
    load_pack<T, V>(x + n * 2 * H + j, a);
    load_pack<T, V>(x + n * 2 * H + H + j, g);
    if (b) {
      float ba[V], bg[V];
      load_pack<T, V>(b + j, ba);
      load_pack<T, V>(b + H + j, bg);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        a[k] += ba[k];
        g[k] += bg[k];
      }
    }
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = a[k] * gelu(g[k]);
    store_pack<T, V>(y + n * H + j, out);
  }
}

template <typename T, int V>
void launch(const GegluArgs& a, cudaStream_t stream) {
  const int threads = 256;
  const unsigned blocks = grid_stride_blocks(a.N * a.H / V, threads, "geglu");
  geglu_kernel<T, V><<<blocks, threads, 0, stream>>>(
      static_cast<const T*>(a.x), static_cast<const T*>(a.bias), static_cast<T*>(a.y), a.N, a.H);
  check_launch("geglu", stream);
}

}  // namespace

void geglu_cuda(DType dtype, const GegluArgs& a, void* stream) {
  dispatch_dtype(dtype, "geglu", [](auto) {});  // unknown dtype -> invalid_argument
  if (a.N < 0 || a.H <= 0) throw std::invalid_argument("geglu: N must be >= 0 and H positive");
  if (a.N == 0) return;
  if (!a.x || !a.y) throw std::invalid_argument("geglu: x and y are required");
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, "geglu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = vec16<T>();
    const bool vec = a.H % V == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16) &&
                     (!a.bias || aligned_to(a.bias, 16));
    if (vec) {
      launch<T, V>(a, st);
    } else {
      launch<T, 1>(a, st);
    }
  });
}

}  // namespace vde
