// posgn: Positional Group Normalization (VIDM), vdengine.ops.reference.posgn:
//   y = (GN(x)*weight + bias)*(1 + scale) + shift   [-> SiLU]
// for x, y [N, C, HW]; scale, shift [M, C, HW] with row n of x using table row n % M (one per-frame
// table shared by every video and both guidance halves: no copy); weight, bias [C] or null. All
// tensors share x's dtype; statistics and arithmetic in fp32.
//
// Kernel: one block per (n, group); the group is L = (C/G)*HW contiguous elements.
//   pass 1: read the group once (packs of V elements, U packs in flight per thread), keeping a
//           per-thread Welford (count, mean, M2); merge across the warp (shuffles) and the block
//           (shared memory, Chan's formula) -> mean, rstd = 1/sqrt(M2/L + eps) (biased variance,
//           as F.group_norm).
//   pass 2: normalise, apply weight/bias, the table row's scale/shift and SiLU, write y.
// kSmem (the group fits the dynamic shared memory budget, kSmemMaxBytes): pass 1 also stashes the
// raw group in shared memory and pass 2 reads it from there -> x crosses HBM once. Otherwise pass 2
// re-reads x from global memory (a group the block just read: mostly L2 hits, at worst a second
// HBM read).
//
// Bytes moved: read x once (+ a second read of x only for groups beyond the shared-memory budget),
// read scale/shift once per (n, group) -- N/M times over the same M table rows, so after the first
// videos they are L2 hits -- write y once: about 2 * N*C*HW * sizeof(T) from HBM.
// Expected bound: HBM bandwidth (Welford and the epilogue are ~20 flops per element).
// Known limit: one block per group, so a launch with N*G far below the SM count (a huge group,
// few of them) underuses the GPU; a split-group reduction would fix that if it matters.
//
// Vectorised when HW % V == 0 (V = 16 bytes / sizeof(T)) and x, y, scale, shift are 16-byte
// aligned: every pack then lies in one channel and every group start is pack aligned. Otherwise
// scalar (V = 1).
//
// No __restrict__: y may alias x (in place). Every element of the group is read in pass 1 before
// the block's __syncthreads in the reduction, and pass 2 writes only this block's group.
#include <algorithm>

#include "cuda/cuda_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

constexpr int kUnroll = 4;  // packs each thread has in flight in pass 1
// Tunable: groups up to this many bytes are held in shared memory (96 KB: two blocks per SM on
// H100/H200, one on A100). Above 48 KB the launcher opts in with cudaFuncSetAttribute.
constexpr size_t kSmemMaxBytes = 96 * 1024;
constexpr size_t kSmemDefaultBytes = 48 * 1024;

struct Welford {
  float n, mean, m2;
};

// Chan et al.: merge b into a. Either side may be empty.
__device__ __forceinline__ void welford_merge(Welford& a, const Welford& b) {
  const float n = a.n + b.n;
  if (b.n == 0.f) return;
  const float delta = b.mean - a.mean;
  const float wb = b.n / n;
  a.mean += delta * wb;
  a.m2 += b.m2 + delta * delta * a.n * wb;
  a.n = n;
}

template <typename T, int V, bool kSmem>
__global__ void __launch_bounds__(512)
    posgn_kernel(const PosGNArgs a, const int G, const int Cg, const int HW, const int L) {
  const int64_t blk = blockIdx.x;  // (n, g)
  const int64_t n = blk / G;
  const int g = static_cast<int>(blk % G);
  const int64_t m = n % a.M;
  const int npk = L / V;  // packs in the group (V divides HW, hence L)

  const T* xg = static_cast<const T*>(a.x) + (n * G + g) * static_cast<int64_t>(L);
  T* yg = static_cast<T*>(a.y) + (n * G + g) * static_cast<int64_t>(L);
  const int64_t toff = (m * G + g) * static_cast<int64_t>(L);
  const T* scg = static_cast<const T*>(a.scale) + toff;
  const T* shg = static_cast<const T*>(a.shift) + toff;
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  Pack<T, V>* sdata = kSmem ? dynamic_smem<Pack<T, V>>() : nullptr;

  // ---- pass 1: statistics (and the shared-memory copy) --------------------------------------
  Welford st{0.f, 0.f, 0.f};
  for (int base = threadIdx.x; base < npk; base += kUnroll * blockDim.x) {
    Pack<T, V> raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // all loads issued before any use
      const int pk = base + u * blockDim.x;
      if (pk < npk) raw[u] = reinterpret_cast<const Pack<T, V>*>(xg)[pk];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int pk = base + u * blockDim.x;
      if (pk < npk) {
        if constexpr (kSmem) sdata[pk] = raw[u];
        float v[V];
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < V; ++i) {
          v[i] = to_float(raw[u].v[i]);
          s += v[i];
        }
        Welford p{static_cast<float>(V), s / V, 0.f};
#pragma unroll
        for (int i = 0; i < V; ++i) p.m2 += (v[i] - p.mean) * (v[i] - p.mean);
        welford_merge(st, p);
      }
    }
  }

  // Warp merge (xor butterfly: every lane ends with the warp's total), then block merge.
  for (int off = 16; off > 0; off >>= 1) {
    Welford o;
    o.n = __shfl_xor_sync(0xffffffffu, st.n, off);
    o.mean = __shfl_xor_sync(0xffffffffu, st.mean, off);
    o.m2 = __shfl_xor_sync(0xffffffffu, st.m2, off);
    welford_merge(st, o);
  }
  __shared__ Welford s_warp[32];
  __shared__ float s_mean, s_rstd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;  // blockDim.x is a multiple of 32
  if (lane == 0) s_warp[warp] = st;
  __syncthreads();
  if (warp == 0) {
    Welford w = lane < nwarps ? s_warp[lane] : Welford{0.f, 0.f, 0.f};
    for (int off = 16; off > 0; off >>= 1) {
      Welford o;
      o.n = __shfl_xor_sync(0xffffffffu, w.n, off);
      o.mean = __shfl_xor_sync(0xffffffffu, w.mean, off);
      o.m2 = __shfl_xor_sync(0xffffffffu, w.m2, off);
      welford_merge(w, o);
    }
    if (lane == 0) {
      s_mean = w.mean;
      s_rstd = 1.f / sqrtf(w.m2 / static_cast<float>(L) + a.eps);
    }
  }
  __syncthreads();  // also orders pass 1's shared-memory stores before pass 2's loads
  const float mean = s_mean, rstd = s_rstd;

  // ---- pass 2: normalise, modulate, write ---------------------------------------------------
  for (int pk = threadIdx.x; pk < npk; pk += blockDim.x) {
    float v[V], sc[V], sh[V];
    if constexpr (kSmem) {
      const Pack<T, V> r = sdata[pk];
#pragma unroll
      for (int i = 0; i < V; ++i) v[i] = to_float(r.v[i]);
    } else {
      load_pack<T, V>(xg + static_cast<int64_t>(pk) * V, v);
    }
    load_pack<T, V>(scg + static_cast<int64_t>(pk) * V, sc);
    load_pack<T, V>(shg + static_cast<int64_t>(pk) * V, sh);
    const int c = g * Cg + (pk * V) / HW;  // the pack's channel (a pack never straddles one)
    const float w = weight ? to_float(weight[c]) : 1.f;
    const float b = bias ? to_float(bias[c]) : 0.f;
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float y = (v[i] - mean) * rstd * w + b;
      y = y * (1.f + sc[i]) + sh[i];
      if (a.silu) y = y / (1.f + expf(-y));  // x*sigmoid(x); -> -0 for y << 0, no NaN
      out[i] = y;
    }
    store_pack<T, V>(yg + static_cast<int64_t>(pk) * V, out);
  }
}

template <typename T, int V>
void launch_posgn(const PosGNArgs& a, int G, int Cg, int HW, int L, cudaStream_t stream) {
  const char* op = "posgn";
  const int threads = L >= 4096 ? 512 : 128;  // multiples of 32 (the reduction needs whole warps)
  const unsigned blocks = static_cast<unsigned>(a.N * G);
  const size_t bytes = static_cast<size_t>(L) * sizeof(T);
  // The opt-in per-block limit, minus the kernel's static shared memory (s_warp etc.) and slack.
  const size_t optin = static_cast<size_t>(max_smem_per_block_optin(op));
  const size_t budget = std::min(kSmemMaxBytes, optin > 2048 ? optin - 2048 : 0);
  if (bytes <= budget) {
    auto kernel = posgn_kernel<T, V, true>;
    if (bytes > kSmemDefaultBytes) {
      check_call(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)),
                 op, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    }
    kernel<<<blocks, threads, bytes, stream>>>(a, G, Cg, HW, L);
  } else {
    posgn_kernel<T, V, false><<<blocks, threads, 0, stream>>>(a, G, Cg, HW, L);
  }
  check_launch(op, stream);
}

}  // namespace

void posgn_cuda(DType dtype, const PosGNArgs& a, void* stream) {
  const char* op = "posgn";
  dispatch_dtype(dtype, op, [](auto) {});  // unknown dtype -> invalid_argument, even when empty
  if (a.N < 0 || a.C < 0 || a.HW < 0) throw std::invalid_argument("posgn: negative N, C or HW");
  if (a.G <= 0 || a.M <= 0) throw std::invalid_argument("posgn: G and M must be positive");
  if (a.C % a.G != 0) throw std::invalid_argument("posgn: C must be a multiple of G");
  if (a.N % a.M != 0) throw std::invalid_argument("posgn: N must be a multiple of M");
  if (a.N == 0 || a.C == 0 || a.HW == 0) return;
  if (!a.x || !a.y || !a.scale || !a.shift) {
    throw std::invalid_argument("posgn: x, y, scale and shift are required");
  }
  const int64_t Cg = a.C / a.G;
  const int64_t L = Cg * a.HW;
  // In-group indices are int: 2^30 leaves headroom for the loop increments.
  if (L > (int64_t{1} << 30)) throw std::invalid_argument("posgn: a group exceeds 2^30 elements");
  if (a.N * a.G > INT32_MAX) throw std::invalid_argument("posgn: N*G exceeds 2^31 - 1 blocks");
  const int G = static_cast<int>(a.G);

  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = vec16<T>();
    const bool vec = a.HW % V == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16) &&
                     aligned_to(a.scale, 16) && aligned_to(a.shift, 16);
    if (vec) {
      launch_posgn<T, V>(a, G, static_cast<int>(Cg), static_cast<int>(a.HW),
                         static_cast<int>(L), st);
    } else {
      launch_posgn<T, 1>(a, G, static_cast<int>(Cg), static_cast<int>(a.HW),
                         static_cast<int>(L), st);
    }
  });
}

}  // namespace vde
