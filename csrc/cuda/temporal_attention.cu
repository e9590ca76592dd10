// temporal_attention: softmax attention across frames, independently for every (video b, pixel s,
// head h), as vdengine.ops.reference.temporal_attention:
//   out[b,f,s,h,:] = sum_j softmax_j(scale * q[b,f,s,h,:].k[b,j,s,h,:] + bias[f,j]) v[b,j,s,h,:]
// q, k, v are read in place through (row_stride, pix_stride) with channel stride 1 -- typically
// strided views chunked out of one [B*F, S, 3C] qkv tensor, so no permute/copy is needed -- and out
// is written contiguous [B*F, S, C]. bias is float32 [F, F] or null; -inf entries mask keys, and a
// query whose scores are all -inf outputs zeros (so does one whose scores hold NaN or +inf, as the
// reference's nan_to_num gives). No batch limit: problems run along grid x, so B*S*H >= 65536
// (where PyTorch's SDPA backends fail) is an ordinary launch.
//
// Kernel: a "problem" is one (b, s, h): F queries, F keys, F values of D = 1..128 channels. The
// kernel is compiled for padded head dims DP = 16, 32, 64, 128 and runs any D <= DP: channels D..DP
// read as zeros and are never stored (kExact = D == DP skips those checks; D = 40, AnimateDiff's
// SD1.5 head, runs at DP = 64: 60% of the lanes do useful flops, the bytes moved stay minimal). A
// block runs PPB problems with P threads per query (P = D/32 for D >= 64, else 1), each thread
// owning DQ = D/P channels of its query: q and the output accumulator live in registers (2*DQ
// floats).
// Keys and values stream through shared memory in tiles of up to KT keys (16; 8 for D >= 64), in
// fp32, for all problems of the block, so shared memory stays at PPB * 2*kt*D*4 bytes (<= 48 KB, no
// opt-in) whatever F is.
// Per tile: scores for the tile's keys in registers (the P partial dot products summed with xor
// shuffles, so the P threads hold bit-identical scores), one online-softmax rescale per tile, then
// the p*V accumulation. Masked keys (-inf) are skipped through exp(-inf - finite) = 0, and a tile
// in which everything so far is masked changes nothing (no exp(-inf - -inf) = NaN). Queries run in
// chunks of up to kMaxQueries (all of them when F <= 128), re-streaming K/V per chunk beyond that.
// Threads per block: PPB*min(F,128)*P rounded up to whole warps (<= 512); padding threads compute
// on valid shared memory and never store.
//
// Bytes moved per problem: read q, k, v once (3*F*D*sizeof(T), each key row a contiguous D-element
// segment), write out once (F*D*sizeof(T)); bias is [F, F] floats shared by all problems (L1/L2).
// Flops: 4*F^2*D per problem on CUDA cores (fp32 FMA), i.e. F/sizeof(T) flops per byte against
// ~20 for an H100's fp32 pipes over its HBM: memory bound up to F ~ 32-40 for fp16/bf16 (~64-80 for
// fp32), compute bound beyond (tensor-core MMA would be the next step for long windows).
//
// Vectorised (one 16-byte fp32 / 8-byte fp16,bf16 access per 4 channels) when q, k, v, out are
// aligned to 4 elements and D and every stride are multiples of 4; scalar otherwise.
#include <algorithm>
#include <cmath>

#include "cuda/cuda_common.cuh"

namespace vde {
namespace {

using namespace vde::cu;

constexpr int kMaxQueries = 128;      // queries per chunk
constexpr int kTargetThreads = 256;   // tunable: threads per block the launcher aims for
constexpr int kMaxThreads = 512;      // kMaxQueries * 4 threads per query (D = 128)
constexpr size_t kSmemBudget = 48 * 1024;  // tunable: dynamic smem per block, no opt-in needed

template <int D>  // D: the padded head dim DP the kernel is compiled for
struct HeadDim {
  static constexpr int P = D >= 64 ? D / 32 : 1;  // threads per query
  static constexpr int DQ = D / P;                // channels per thread: 16 or 32
  static constexpr int NC = DQ / 4;               // float4 chunks per thread
  static constexpr int D4 = D / 4;                // float4 chunks per key/value row
  // Keys per shared-memory tile = scores each thread holds in registers (tunable). 8 for the wide
  // heads: half the registers and shared memory per problem, so more problems share a block.
  static constexpr int KT = D >= 64 ? 8 : 16;
};

// Channels 4*c4 .. 4*c4+3 of a head row p (D channels): zeros past D unless kExact (D = DP).
template <typename T, bool kVec, bool kExact>
__device__ __forceinline__ float4 load_head4(const T* p, int c4, int D) {
  if constexpr (kExact) {
    return load4<T, kVec>(p + 4 * c4);
  } else {
    if (4 * c4 + 4 <= D) return load4<T, kVec>(p + 4 * c4);
    float f[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = 4 * c4 + i < D ? to_float(p[4 * c4 + i]) : 0.f;
    return make_float4(f[0], f[1], f[2], f[3]);
  }
}

// Stores channels 4*c4 .. 4*c4+3 of a head row, those below D only unless kExact.
template <typename T, bool kVec, bool kExact>
__device__ __forceinline__ void store_head4(T* p, int c4, int D, float4 v) {
  if constexpr (kExact) {
    store4<T, kVec>(p + 4 * c4, v);
  } else if (4 * c4 + 4 <= D) {
    store4<T, kVec>(p + 4 * c4, v);
  } else {
    const float f[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (4 * c4 + i < D) p[4 * c4 + i] = from_float<T>(f[i]);
    }
  }
}

template <typename T, int DP, bool kVec, bool kExact>
__global__ void __launch_bounds__(kMaxThreads)
    temporal_attention_kernel(const AttentionArgs a, const int FQ, const int PPB, const int kt,
                              const int64_t total) {
  using HD = HeadDim<DP>;
  const int D = kExact ? DP : static_cast<int>(a.D);  // channels per head actually present
  constexpr int P = HD::P, DQ = HD::DQ, NC = HD::NC, D4 = HD::D4, KT = HD::KT;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* out = static_cast<T*>(a.out);
  const int F = static_cast<int>(a.F);
  const int64_t S = a.S, H = a.H;

  // Shared memory: K tile, V tile [kt][PPB][D4] float4 each, then each problem's k/v base offset.
  float4* sK = dynamic_smem<float4>();
  float4* sV = sK + static_cast<size_t>(PPB) * kt * D4;
  int64_t* sKbase = reinterpret_cast<int64_t*>(sV + static_cast<size_t>(PPB) * kt * D4);
  int64_t* sVbase = sKbase + PPB;

  const int64_t first = static_cast<int64_t>(blockIdx.x) * PPB;  // first problem of the block
  for (int pl = threadIdx.x; pl < PPB; pl += blockDim.x) {
    const int64_t gp = first + pl;
    int64_t kb = -1, vb = -1;  // -1: past the last problem (its tiles are zero-filled)
    if (gp < total) {
      const int64_t h = gp % H, bs = gp / H, s = bs % S, b = bs / S;
      kb = b * F * a.k_row_stride + s * a.k_pix_stride + h * D;
      vb = b * F * a.v_row_stride + s * a.v_pix_stride + h * D;
    }
    sKbase[pl] = kb;
    sVbase[pl] = vb;
  }
  // (made visible by the __syncthreads that opens the first tile)

  // This thread: problem lp of the block, query fl of the chunk, channel slice p.
  const int per_prob = FQ * P;
  const int tid = threadIdx.x;
  const int p = tid % P;  // per_prob is a multiple of P, so the P threads of a query are
                          // consecutive lanes of one warp, aligned to P
  int lp = tid / per_prob;
  int fl = (tid % per_prob) / P;
  const bool thread_used = lp < PPB;
  if (!thread_used) {  // warp padding: compute on problem PPB-1, query 0; never store
    lp = PPB - 1;
    fl = 0;
  }
  const int64_t gp = first + lp;
  const bool prob_valid = gp < total;
  // Offsets of this problem's frame-0 q row and out row (frame f adds f row strides).
  int64_t q_off, o_off;
  {
    const int64_t h = gp % H, bs = gp / H, s = bs % S, b = bs / S;
    q_off = b * F * a.q_row_stride + s * a.q_pix_stride + h * D;
    o_off = (b * F * S + s) * (H * D) + h * D;
  }

  for (int f0 = 0; f0 < F; f0 += FQ) {
    const int f = f0 + fl;
    const bool active = thread_used && prob_valid && f < F;
    const int fb = f < F ? f : F - 1;  // bias row read by inactive threads: valid, unused

    float qv[DQ];
    if (active) {
      const T* qp = q + q_off + f * a.q_row_stride;
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const float4 t = load_head4<T, kVec, kExact>(qp, i * P + p, D);
        qv[4 * i] = t.x, qv[4 * i + 1] = t.y, qv[4 * i + 2] = t.z, qv[4 * i + 3] = t.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < DQ; ++i) qv[i] = 0.f;
    }

    float o[DQ];
#pragma unroll
    for (int i = 0; i < DQ; ++i) o[i] = 0.f;
    float m = -INFINITY;  // running max of the scores seen
    float l = 0.f;        // running sum of exp(score - m)
    bool bad = false;     // a NaN or +inf score: the reference's softmax row is all NaN -> zeros

    for (int j0 = 0; j0 < F; j0 += kt) {
      const int nk = min(kt, F - j0);  // keys in this tile (block-uniform)
      __syncthreads();  // everyone is done reading the previous tile (and sK/sVbase are written)

      // Cooperative load of the tile, converted to fp32. Index order (key, problem, chunk), the
      // shared-memory layout itself: the problems of a block are consecutive heads, so consecutive
      // threads read one contiguous run of global memory and write consecutive 16-byte words.
      const int tile4 = nk * PPB * D4;
      for (int idx = tid; idx < tile4; idx += blockDim.x) {
        const int c = idx % D4;
        const int t = idx / D4;
        const int pl = t % PPB;
        const int jj = t / PPB;
        const int64_t kb = sKbase[pl], vb = sVbase[pl];
        float4 kk = make_float4(0.f, 0.f, 0.f, 0.f), vv = kk;
        if (kb >= 0) {
          const int64_t j = j0 + jj;
          kk = load_head4<T, kVec, kExact>(k + kb + j * a.k_row_stride, c, D);
          vv = load_head4<T, kVec, kExact>(v + vb + j * a.v_row_stride, c, D);
        }
        sK[idx] = kk;  // idx = (jj*PPB + pl)*D4 + c
        sV[idx] = vv;
      }
      __syncthreads();

      // Scores of this tile's keys. Thread slice p reads chunks p, p+P, ...: the P threads of a
      // query hit consecutive 16-byte words (no bank conflict), other queries broadcast.
      float sc[KT];
#pragma unroll
      for (int jj = 0; jj < KT; ++jj) {
        float sv = -INFINITY;
        if (jj < nk) {  // block-uniform: every lane reaches the shuffles
          const float4* kr = sK + (jj * PPB + lp) * D4;
          float acc = 0.f;
#pragma unroll
          for (int i = 0; i < NC; ++i) {
            const float4 kv = kr[i * P + p];
            acc = fmaf(qv[4 * i], kv.x, acc);
            acc = fmaf(qv[4 * i + 1], kv.y, acc);
            acc = fmaf(qv[4 * i + 2], kv.z, acc);
            acc = fmaf(qv[4 * i + 3], kv.w, acc);
          }
#pragma unroll
          for (int off = 1; off < P; off <<= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
          sv = acc * a.scale;
          if (a.bias) sv += __ldg(a.bias + static_cast<int64_t>(fb) * F + (j0 + jj));
        }
        sc[jj] = sv;
      }

      // Online softmax, one rescale per tile. A NaN or +inf score poisons the reference's whole
      // softmax row (then zeroed by its nan_to_num); `bad` records it explicitly, since a NaN in a
      // tile that is otherwise masked would never reach l (fmaxf drops NaN, the tile is skipped).
      float tmax = -INFINITY;
#pragma unroll
      for (int jj = 0; jj < KT; ++jj) {
        bad |= sc[jj] != sc[jj] || sc[jj] == INFINITY;
        tmax = fmaxf(tmax, sc[jj]);
      }
      const float m_new = fmaxf(m, tmax);
      if (m_new != -INFINITY) {  // else every key so far is masked: nothing to add yet
        const float corr = expf(m - m_new);  // m = -inf (first unmasked tile) -> 0
        l *= corr;
#pragma unroll
        for (int i = 0; i < DQ; ++i) o[i] *= corr;
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) {
          if (jj < nk) {  // beyond nk: stale shared memory, never touched
            const float pj = expf(sc[jj] - m_new);  // masked key: exp(-inf) = 0
            l += pj;
            const float4* vr = sV + (jj * PPB + lp) * D4;
#pragma unroll
            for (int i = 0; i < NC; ++i) {
              const float4 vv = vr[i * P + p];
              o[4 * i] = fmaf(pj, vv.x, o[4 * i]);
              o[4 * i + 1] = fmaf(pj, vv.y, o[4 * i + 1]);
              o[4 * i + 2] = fmaf(pj, vv.z, o[4 * i + 2]);
              o[4 * i + 3] = fmaf(pj, vv.w, o[4 * i + 3]);
            }
          }
        }
        m = m_new;
      }
    }

    if (active) {
      const bool zero = bad || !(l > 0.f);  // fully masked (l = 0) or poisoned query -> zeros
      T* op = out + o_off + f * S * (H * D);
#pragma unroll
      for (int i = 0; i < NC; ++i) {
        const float4 r =
            zero ? make_float4(0.f, 0.f, 0.f, 0.f)
                 : make_float4(o[4 * i] / l, o[4 * i + 1] / l, o[4 * i + 2] / l, o[4 * i + 3] / l);
        store_head4<T, kVec, kExact>(op, i * P + p, D, r);
      }
    }
  }
}

template <typename T, int D, bool kVec, bool kExact>
void launch_attention(const AttentionArgs& a, cudaStream_t stream) {
  using HD = HeadDim<D>;
  const int64_t total = a.B * a.S * a.H;
  const int F = static_cast<int>(a.F);
  const int FQ = std::min(F, kMaxQueries);
  const int kt = std::min(F, HD::KT);
  const int per_prob = FQ * HD::P;
  const size_t prob_bytes = 2 * static_cast<size_t>(kt) * D * sizeof(float) + 2 * sizeof(int64_t);
  int64_t ppb = std::max(1, kTargetThreads / per_prob);
  ppb = std::min<int64_t>(ppb, std::max<int64_t>(1, kSmemBudget / prob_bytes));
  ppb = std::min(ppb, total);
  const int PPB = static_cast<int>(ppb);
  const int threads = (PPB * per_prob + 31) / 32 * 32;  // whole warps (full-mask shuffles)
  if (threads > kMaxThreads) throw std::logic_error("temporal_attention: block size bug");
  const int64_t blocks = (total + PPB - 1) / PPB;
  if (blocks > INT32_MAX) {
    throw std::invalid_argument("temporal_attention: B*S*H too large for one launch");
  }
  const size_t smem = PPB * prob_bytes;
  temporal_attention_kernel<T, D, kVec, kExact>
      <<<static_cast<unsigned>(blocks), threads, smem, stream>>>(a, FQ, PPB, kt, total);
  check_launch("temporal_attention", stream);
}

// The smallest padded head dim DP >= D; exact instantiations for D = DP.
template <typename T, bool kVec>
void dispatch_head_dim(const AttentionArgs& a, cudaStream_t stream) {
  switch (a.D) {
    case 16: return launch_attention<T, 16, kVec, true>(a, stream);
    case 32: return launch_attention<T, 32, kVec, true>(a, stream);
    case 64: return launch_attention<T, 64, kVec, true>(a, stream);
    case 128: return launch_attention<T, 128, kVec, true>(a, stream);
    default: break;
  }
  if (a.D < 16) return launch_attention<T, 16, kVec, false>(a, stream);
  if (a.D < 32) return launch_attention<T, 32, kVec, false>(a, stream);
  if (a.D < 64) return launch_attention<T, 64, kVec, false>(a, stream);
  return launch_attention<T, 128, kVec, false>(a, stream);  // D < 128 (checked by the caller)
}

}  // namespace

void temporal_attention_cuda(DType dtype, const AttentionArgs& a, void* stream) {
  const char* op = "temporal_attention";
  dispatch_dtype(dtype, op, [](auto) {});  // unknown dtype -> invalid_argument, even when empty
  if (a.D < 1 || a.D > 128) {
    throw std::invalid_argument("temporal_attention: head dim D must be in [1, 128], got " +
                                std::to_string(a.D));
  }
  if (a.B < 0 || a.F < 0 || a.S < 0 || a.H < 0) {
    throw std::invalid_argument("temporal_attention: negative B, F, S or H");
  }
  if (a.B == 0 || a.F == 0 || a.S == 0 || a.H == 0) return;
  if (a.F > (int64_t{1} << 16)) {
    throw std::invalid_argument("temporal_attention: F exceeds 65536 frames");
  }
  if (!a.q || !a.k || !a.v || !a.out) {
    throw std::invalid_argument("temporal_attention: q, k, v and out are required");
  }
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  dispatch_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const size_t align = 4 * sizeof(T);
    const bool vec = aligned_to(a.q, align) && aligned_to(a.k, align) && aligned_to(a.v, align) &&
                     aligned_to(a.out, align) && a.D % 4 == 0 && a.q_row_stride % 4 == 0 &&
                     a.q_pix_stride % 4 == 0 && a.k_row_stride % 4 == 0 &&
                     a.k_pix_stride % 4 == 0 && a.v_row_stride % 4 == 0 &&
                     a.v_pix_stride % 4 == 0;
    if (vec) {
      dispatch_head_dim<T, true>(a, st);
    } else {
      dispatch_head_dim<T, false>(a, st);
    }
  });
}

}  // namespace vde
