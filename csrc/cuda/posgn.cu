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

// Merges every thread's Welford into the block's: mean and rstd = 1/sqrt(M2/count + eps) for all
// threads. Warp merge (xor butterfly: every lane ends with the warp's total), then block merge.
// Ends with a __syncthreads, which also orders a pass 1's shared-memory stores before pass 2.
__device__ __forceinline__ void block_mean_rstd(Welford st, float count, float eps, float& mean,
                                                float& rstd) {
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
      s_rstd = 1.f / sqrtf(w.m2 / count + eps);
    }
  }
  __syncthreads();
  mean = s_mean;
  rstd = s_rstd;
}

// The Welford of V values.
template <int V>
__device__ __forceinline__ Welford pack_welford(const float (&v)[V]) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < V; ++i) s += v[i];
  Welford p{static_cast<float>(V), s / V, 0.f};
#pragma unroll
  for (int i = 0; i < V; ++i) p.m2 += (v[i] - p.mean) * (v[i] - p.mean);
  return p;
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
#pragma unroll
        for (int i = 0; i < V; ++i) v[i] = to_float(raw[u].v[i]);
        welford_merge(st, pack_welford<V>(v));
      }
    }
  }

  float mean, rstd;
  block_mean_rstd(st, static_cast<float>(L), a.eps, mean, rstd);

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

// ---- group_norm: GroupNorm (+ SiLU) whose statistics span the F frames of a video ----------------
// As vdengine.ops.reference.group_norm: x, y [B*F, C, HW]; group (v, g) is the F blocks of
// L = (C/G)*HW contiguous elements at rows v*F .. v*F+F-1, C*HW elements apart: read in place, no
// permute to [B, C, F, HW]. One block per (v, g), the posgn kernel's two passes over F*L elements
// (shared-memory stash of the whole video group when it fits, else pass 2 re-reads x, from L2
// mostly). Bytes moved: read x once (twice past the stash), write y once. Known limit: B*G blocks
// (64 for 2 videos of 32 groups), fewer than the SMs of a large GPU; a split-group reduction
// would fill it.

namespace {

template <typename T, int V, bool kSmem>
__global__ void __launch_bounds__(512)
    group_norm_kernel(const GroupNormArgs a, const int G, const int Cg, const int HW, const int L) {
  const int64_t blk = blockIdx.x;  // (v, g)
  const int64_t v = blk / G;
  const int g = static_cast<int>(blk % G);
  const int F = static_cast<int>(a.F);
  const int npk = L / V;      // packs per frame block (V divides HW, hence L)
  const int total = F * npk;  // packs in the video group
  const int64_t frame_stride = static_cast<int64_t>(G) * L;  // C*HW
  // Pack idx of the group lies in frame idx / npk at pack idx % npk of that frame's block.
  const int64_t base = (v * F * G + g) * static_cast<int64_t>(L);
  auto offset = [&](int idx) {
    return base + (idx / npk) * frame_stride + static_cast<int64_t>(idx % npk) * V;
  };
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const T* weight = static_cast<const T*>(a.weight);
  const T* bias = static_cast<const T*>(a.bias);
  Pack<T, V>* sdata = kSmem ? dynamic_smem<Pack<T, V>>() : nullptr;

  Welford st{0.f, 0.f, 0.f};
  for (int b0 = threadIdx.x; b0 < total; b0 += kUnroll * blockDim.x) {
    Pack<T, V> raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // all loads issued before any use
      const int idx = b0 + u * blockDim.x;
      if (idx < total) raw[u] = *reinterpret_cast<const Pack<T, V>*>(x + offset(idx));
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int idx = b0 + u * blockDim.x;
      if (idx < total) {
        if constexpr (kSmem) sdata[idx] = raw[u];
        float vals[V];
#pragma unroll
        for (int i = 0; i < V; ++i) vals[i] = to_float(raw[u].v[i]);
        welford_merge(st, pack_welford<V>(vals));
      }
    }
  }
  float mean, rstd;
  block_mean_rstd(st, static_cast<float>(L) * F, a.eps, mean, rstd);

  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int64_t off = offset(idx);
    float vals[V];
    if constexpr (kSmem) {
      const Pack<T, V> r = sdata[idx];
#pragma unroll
      for (int i = 0; i < V; ++i) vals[i] = to_float(r.v[i]);
    } else {
      load_pack<T, V>(x + off, vals);
    }
    const int c = g * Cg + ((idx % npk) * V) / HW;  // the pack's channel
    const float w = (weight ? to_float(weight[c]) : 1.f) * rstd;
    const float b = bias ? to_float(bias[c]) : 0.f;
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float r = (vals[i] - mean) * w + b;
      if (a.silu) r = r / (1.f + expf(-r));
      out[i] = r;
    }
    store_pack<T, V>(y + off, out);
  }
}

template <typename T, int V>
void launch_group_norm(const GroupNormArgs& a, int G, int Cg, int HW, int L, cudaStream_t stream) {
  const char* op = "group_norm";
  const int64_t group = static_cast<int64_t>(L) * a.F;
  const int threads = group >= 4096 ? 512 : 128;
  const unsigned blocks = static_cast<unsigned>((a.N / a.F) * G);
  const size_t bytes = static_cast<size_t>(group) * sizeof(T);
  const size_t optin = static_cast<size_t>(max_smem_per_block_optin(op));
  const size_t budget = std::min(kSmemMaxBytes, optin > 2048 ? optin - 2048 : 0);
  if (bytes <= budget) {
    auto kernel = group_norm_kernel<T, V, true>;
    if (bytes > kSmemDefaultBytes) {
      check_call(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)),
                 op, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    }
    kernel<<<blocks, threads, bytes, stream>>>(a, G, Cg, HW, L);
  } else {
    group_norm_kernel<T, V, false><<<blocks, threads, 0, stream>>>(a, G, Cg, HW, L);
  }
  check_launch(op, stream);
}

}  // namespace

void group_norm_cuda(DType dtype, const GroupNormArgs& a, void* stream) {
  const char* op = "group_norm";
  dispatch_dtype(dtype, op, [](auto) {});  // unknown dtype -> invalid_argument, even when empty
  if (a.N < 0 || a.C < 0 || a.HW < 0) {
    throw std::invalid_argument("group_norm: negative N, C or HW");
  }
  if (a.G <= 0 || a.F <= 0) throw std::invalid_argument("group_norm: G and F must be positive");
  if (a.C % a.G != 0) throw std::invalid_argument("group_norm: C must be a multiple of G");
  if (a.N % a.F != 0) throw std::invalid_argument("group_norm: N must be a multiple of F");
  if (a.N == 0 || a.C == 0 || a.HW == 0) return;
  if (!a.x || !a.y) throw std::invalid_argument("group_norm: x and y are required");
  const int64_t Cg = a.C / a.G;
  const int64_t L = Cg * a.HW;
  // In-group pack indices are int: 2^30 elements per video group leaves headroom.
  if (L * a.F > (int64_t{1} << 30)) {
    throw std::invalid_argument("group_norm: a video group (F*C/G*HW) exceeds 2^30 elements");
  }
  if ((a.N / a.F) * a.G > INT32_MAX) {
    throw std::invalid_argument("group_norm: B*G exceeds 2^31 - 1 blocks");
  }
  const int G = static_cast<int>(a.G);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = vec16<T>();
    const bool vec = a.HW % V == 0 && aligned_to(a.x, 16) && aligned_to(a.y, 16);
    if (vec) {
      launch_group_norm<T, V>(a, G, static_cast<int>(Cg), static_cast<int>(a.HW),
                              static_cast<int>(L), st);
    } else {
      launch_group_norm<T, 1>(a, G, static_cast<int>(Cg), static_cast<int>(a.HW),
                              static_cast<int>(L), st);
    }
  });
}

}  // namespace vde
