// Temporal attention, float32 and bfloat16 CPU kernel: softmax attention across the F frames,
// independently for every (video b, pixel s, head h). bfloat16 storage (q, k, v, out), float32
// scores, softmax and accumulation, one rounding per output.
//
//   out[b*F+i, s, h*D+d] = Σ_j softmax_j(scale * q_i·k_j + bias[i, j]) v_j[d]
//   q_i = q[(b*F+i)*q_row_stride + s*q_pix_stride + h*D + 0..D), same for k, v; out contiguous.
//   A query whose scores are all -inf outputs zeros.
//
// Algorithm, per work item (b, s, h), queries in blocks of L = one vector register (16 AVX-512,
// 8 AVX2, 4 SSE2), any F:
//   1. Q^T block: qt[d][i] = scale * q_i[d], L x L tiles transposed in registers (L*log2(L)
//      shuffles per tile).
//   2. scores transposed, st[j][i] = Σ_d k_j[d] qt[d][i] (+ bias^T): 8 keys per pass (4 on SSE2),
//      so 8 FMA chains hide the FMA latency and each qt load feeds 8 FMAs (k_j[d] is a broadcast);
//      sums in blocks of 16 terms, so rounding error grows with 16 + D/16 rather than D.
//   3. softmax over j for the L queries at once: max, exp, sum are lane-wise across st rows (no
//      horizontal reductions); exp is an inlined polynomial.
//   4. O = P V: o_i[c:c+L] = Σ_j st[j][i] v_j[c:c+L], 8 queries per pass (4 on SSE2) sharing each
//      v load; scaled by 1/Σ and stored straight into the contiguous output row. The D % L tail
//      channels (head dims such as 8 or 40) run the same vector FMAs on a zero-padded copy of
//      V's tail, made once per item.
//   q, k, v are read in place through their strides (no permute copies). Work items (pixel-major,
//   head-minor) go to the threads in contiguous chunks (dynamic, ~16 per thread). An item touches
//   4F separate D-float rows (q, k, v, out of every frame): too many streams for the hardware
//   prefetcher, so the same head of the next pixel is prefetched explicitly. Scratch per thread:
//   L*(D + 2F + 1) floats (4 KiB at F=16, D=32), in L1.
//   bfloat16: q and v are widened as they are loaded (one shift per vector on top of the FMAs);
//   k, read one broadcast scalar per FMA in step 2, is widened once per item into F*D floats of
//   scratch first, so that step 2 runs the float32 code unchanged.
//
// Bytes moved (minimal, and what this kernel moves): read q, k, v and write out once, 16 bytes
//   per element of q: 16*B*F*S*C. The PyTorch path (permute copies, SDPA, permute back) moves
//   at least twice that.
// Bound: 4*F*D flops per query = F/4 flops per byte (4 at F=16): memory bound for short windows,
//   compute bound for long ones (where the two meet depends on the core's flop rate and the
//   memory bandwidth). Measured GB/s and fraction of the copy bandwidth ("%floor") per shape:
//   `python benchmarks/kernels.py --json benchmarks/results/kernels-cpu.json`, see that file.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/ops.h"
#include "cpu/bf16.h"
#include "cpu/cpu_common.h"

namespace vde {
namespace {

using namespace vde::cpu;

// ---- L-lane vectors (Vec, load, store: bf16.h) -------------------------------------------------
// L = the target's register width: 16 (AVX-512), 8 (AVX2), 4 (SSE2). Query blocks are L wide.
// r = mask ? a : b, mask lanes all-ones or zero (results of vector comparisons).
template <class V, class M>
VDE_INLINE void select(V& r, const M& mask, const V& a, const V& b) {
  r = reinterpret_cast<V>((reinterpret_cast<M>(a) & mask) | (reinterpret_cast<M>(b) & ~mask));
}

// x = exp(x) for x ≤ 0 (softmax after max subtraction): Cephes expf, ~1 ulp; x < -87.33
// (incl. -inf) gives 0; NaN stays NaN (and never reaches the float -> int conversion).
template <int L>
VDE_INLINE void vexp_nonpos(typename Vec<L>::f& x) {
  typedef typename Vec<L>::f V;
  typedef typename Vec<L>::i I;
  V xc;
  const I under = x < -87.33f;
  select(xc, under, V{} - 87.33f, x);  // NaN passes (and stays NaN through the polynomial)
  const V t = xc * 1.44269504088896341f;
  const V n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer
  V r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const V z = r * r;
  V p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  V nb;  // n, but NaN lanes replaced (only they fail the test) so the int conversion is defined
  select(nb, n >= -126.0f, n, V{} - 126.0f);
  const I bits = (__builtin_convertvector(nb, I) + 127) << 23;  // 2^n
  x = reinterpret_cast<V>(reinterpret_cast<I>(p * reinterpret_cast<V>(bits)) & ~under);
}

#if defined(__GNUC__) && !defined(__clang__)
#define VDE_HAVE_SHUFFLE 1
// In-register L x L transpose: log2(L) rounds of the perfect shuffle (zip of row i with row i+L/2),
// L*log2(L) two-source permutes instead of L*L scalar moves.
template <int L>
VDE_INLINE void transpose(typename Vec<L>::f* r) {
  typedef typename Vec<L>::f V;
  typename Vec<L>::i lo, hi;
  for (int k = 0; k < L / 2; ++k) {
    lo[2 * k] = k;
    lo[2 * k + 1] = L + k;
    hi[2 * k] = k + L / 2;
    hi[2 * k + 1] = L + k + L / 2;
  }
  for (int round = 1; round < L; round *= 2) {
    V t[L];
    for (int i = 0; i < L / 2; ++i) {
      t[2 * i] = __builtin_shuffle(r[i], r[i + L / 2], lo);
      t[2 * i + 1] = __builtin_shuffle(r[i], r[i + L / 2], hi);
    }
    for (int i = 0; i < L; ++i) r[i] = t[i];
  }
}
#endif

// Prefetch the cache lines of [p, p + bytes) into L2 (for writing when W). A work item's 4F frame
// rows are 4F separate strided streams, too many for the hardware prefetchers to follow.
template <bool W>
VDE_INLINE void prefetch_span(const void* p, int64_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + bytes - 1) & ~uintptr_t{63};
  for (uintptr_t line = first; line <= last; line += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(line), W ? 1 : 0, 2);
}

// ---- the op -------------------------------------------------------------------------------------
template <class T>  // storage: float or bf16
struct Attn {
  const T* q;
  const T* k;
  const T* v;
  const float* bias_t;  // bias transposed and padded: bias_t[j*Fp + i] = bias[i, j]; or nullptr
  T* out;
  int64_t B, F, S, H, D, C, Fp;
  int64_t qr, qp, kr, kp, vr, vp;
  float scale;
};

constexpr int kMaxLanes = 16;
constexpr int64_t kSumBlock = 16;  // dot products sum blocks of 16 terms, then the blocks
// Scratch per thread, in floats: qt [D][L] + st [F][L] + inv [L] + vt [F][L] (+ kf [F][D], the
// item's keys widened to float32, with bfloat16 storage).
inline int64_t scratch_floats(int64_t F, int64_t D, bool widen_k) {
  return kMaxLanes * (D + 2 * F + 1) + (widen_k ? F * D : 0);
}

// The first `count` lanes of r stored at p (the channel tail of an output row).
template <class V>
VDE_INLINE void store_first(float* p, const V& r, int64_t count) {
  std::memcpy(p, &r, count * sizeof(float));
}
template <class V>
VDE_INLINE void store_first(bf16* p, const V& r, int64_t count) {
  bf16 rounded[lanes_of<V>];
  store(rounded, r);
  std::memcpy(p, rounded, count * sizeof(bf16));
}

template <int ISA> constexpr int lanes() { return ISA == kAvx512 ? 16 : (ISA == kAvx2 ? 8 : 4); }
// Queries per pass of step 4: QB accumulators + 1 v vector stay in registers.
template <int ISA> constexpr int query_block() { return ISA == kAvx512 ? 8 : lanes<ISA>(); }
// Keys per pass of step 2 (accumulators in registers).
template <int ISA> constexpr int key_block() { return ISA == kBase ? 4 : 8; }

template <int ISA, class T>
VDE_INLINE void attend(const Attn<T>& a, int64_t item0, int64_t item1, float* scratch) {
  constexpr int L = lanes<ISA>();
  constexpr int QB = query_block<ISA>();
  static_assert(L % QB == 0, "query blocks must tile the lanes");
  constexpr int KB = key_block<ISA>();
  typedef typename Vec<L>::f V;
  const int64_t F = a.F, D = a.D;
  float* qt = scratch;           // [D][L]
  float* st = qt + L * D;        // [F][L]
  float* inv = st + L * F;       // [L]
  float* vt = inv + L;           // [F][L]: the channel tail of V (D % L channels), zero-padded
  float* kf = vt + L * F;        // [F][D]: bfloat16 keys widened (unused for float32)
  const int64_t c_tail = D - D % L, rem = D % L;  // first tail channel, tail width
  if (rem) std::memset(vt, 0, sizeof(float) * L * F);  // lanes >= rem stay zero
  const V zero{};
  const float ninf = -std::numeric_limits<float>::infinity();

  for (int64_t item = item0; item < item1; ++item) {
    const int64_t bs = item / a.H, h = item % a.H;
    const int64_t b = bs / a.S, s = bs % a.S;
    const T* qb = a.q + b * F * a.qr + s * a.qp + h * D;  // frame i at qb + i*qr
    const T* kin = a.k + b * F * a.kr + s * a.kp + h * D;
    const T* vb = a.v + b * F * a.vr + s * a.vp + h * D;
    T* ob = a.out + (b * F * a.S + s) * a.C + h * D;     // frame i at ob + i*S*C
    const int64_t o_row = a.S * a.C;

    if (bs + 1 < a.B * a.S) {  // this head of the next pixel: H items ahead, ~µs of work
      const int64_t b1 = (bs + 1) / a.S, s1 = (bs + 1) % a.S;
      const T* qn = a.q + b1 * F * a.qr + s1 * a.qp + h * D;
      const T* kn = a.k + b1 * F * a.kr + s1 * a.kp + h * D;
      const T* vn = a.v + b1 * F * a.vr + s1 * a.vp + h * D;
      T* on = a.out + (b1 * F * a.S + s1) * a.C + h * D;
      const int64_t row_bytes = D * static_cast<int64_t>(sizeof(T));
      for (int64_t i = 0; i < F; ++i) {
        prefetch_span<false>(qn + i * a.qr, row_bytes);
        prefetch_span<false>(kn + i * a.kr, row_bytes);
        prefetch_span<false>(vn + i * a.vr, row_bytes);
        prefetch_span<true>(on + i * o_row, row_bytes);
      }
    }

    // Keys as float32 rows kb + j*kr: in place, or (bfloat16) widened into kf once per item.
    const float* kb;
    int64_t kr;
    if constexpr (is_bf16<T>) {
      for (int64_t j = 0; j < F; ++j) {
        const T* src = kin + j * a.kr;
        float* dst = kf + j * D;
        VDE_OMP(simd)
        for (int64_t d = 0; d < D; ++d) dst[d] = to_float(src[d]);
      }
      kb = kf;
      kr = D;
    } else {
      kb = kin;
      kr = a.kr;
    }

    if (rem) {  // the channel tail of every frame's V row, in full zero-padded vectors
      for (int64_t j = 0; j < F; ++j) {
        const T* src = vb + j * a.vr + c_tail;
        for (int64_t d = 0; d < rem; ++d) vt[j * L + d] = to_float(src[d]);
      }
    }

    for (int64_t i0 = 0; i0 < F; i0 += L) {
      const int64_t ni = std::min<int64_t>(L, F - i0);

      // 1. qt[d][ii] = scale * q_{i0+ii}[d]; lanes past ni are zero (their results are unused).
      int64_t d0 = 0;
#ifdef VDE_HAVE_SHUFFLE
      for (; d0 + L <= D; d0 += L) {  // L x L tiles transposed in registers
        V r[L];
        if (ni == L) {
          for (int ii = 0; ii < L; ++ii) load(r[ii], qb + (i0 + ii) * a.qr + d0);
        } else {
          for (int ii = 0; ii < L; ++ii) {
            if (ii < ni) load(r[ii], qb + (i0 + ii) * a.qr + d0);
            else r[ii] = zero;
          }
        }
        for (int ii = 0; ii < L; ++ii) r[ii] *= a.scale;
        transpose<L>(r);
        for (int dd = 0; dd < L; ++dd) store(qt + (d0 + dd) * L, r[dd]);
      }
#endif
      if (d0 < D) {  // channel tail (all channels without shuffles)
        for (int64_t ii = 0; ii < ni; ++ii) {
          const T* qrow = qb + (i0 + ii) * a.qr;
          for (int64_t d = d0; d < D; ++d) qt[d * L + ii] = to_float(qrow[d]) * a.scale;
        }
        for (int64_t d = d0; d < D; ++d)
          for (int64_t ii = ni; ii < L; ++ii) qt[d * L + ii] = 0.0f;
      }

      // 2. st[j][:] = K_j · Q^T (+ bias^T[j][i0:i0+L]), KB keys at a time: KB independent FMA
      //    chains hide the FMA latency and every qt load feeds KB FMAs.
      int64_t j = 0;
      for (; j + KB <= F; j += KB) {
        V acc[KB];
        for (int jj = 0; jj < KB; ++jj) acc[jj] = zero;
        const float* k0 = kb + j * kr;
        for (int64_t d0 = 0; d0 < D; d0 += kSumBlock) {  // blocked sum: error grows with 16, not D
          const int64_t d1 = std::min(D, d0 + kSumBlock);
          V part[KB];
          for (int jj = 0; jj < KB; ++jj) part[jj] = zero;
          for (int64_t d = d0; d < d1; ++d) {
            V qv;
            load(qv, qt + d * L);
            for (int jj = 0; jj < KB; ++jj) part[jj] += k0[jj * kr + d] * qv;
          }
          for (int jj = 0; jj < KB; ++jj) acc[jj] += part[jj];
        }
        for (int jj = 0; jj < KB; ++jj) {
          if (a.bias_t) {
            V bv;
            load(bv, a.bias_t + (j + jj) * a.Fp + i0);
            acc[jj] += bv;
          }
          store(st + (j + jj) * L, acc[jj]);
        }
      }
      for (; j < F; ++j) {
        const float* k0 = kb + j * kr;
        V s0{};
        for (int64_t d0 = 0; d0 < D; d0 += kSumBlock) {
          const int64_t d1 = std::min(D, d0 + kSumBlock);
          V part{};
          for (int64_t d = d0; d < d1; ++d) {
            V qv;
            load(qv, qt + d * L);
            part += k0[d] * qv;
          }
          s0 += part;
        }
        if (a.bias_t) {
          V b0;
          load(b0, a.bias_t + j * a.Fp + i0);
          s0 += b0;
        }
        store(st + j * L, s0);
      }

      // 3. Softmax over j, lane-wise. A fully masked query has max -inf: use 0 instead so every
      //    exp is exp(-inf) = 0 and its sum is 0. Queries with sum 0 or NaN (a NaN or +inf score)
      //    get all-zero probabilities, as the reference's nan_to_num(softmax) gives.
      V m = zero + ninf;
      for (j = 0; j < F; ++j) {
        V x;
        load(x, st + j * L);
        select(m, x > m, x, m);
      }
      select(m, m == ninf, zero, m);
      V l{};
      for (j = 0; j < F; ++j) {
        V x;
        load(x, st + j * L);
        x -= m;
        vexp_nonpos<L>(x);
        l += x;
        store(st + j * L, x);
      }
      const typename Vec<L>::i live = l > 0.0f;
      V r;
      select(r, live, 1.0f / l, zero);
      store(inv, r);
      int32_t lanes_live[L];
      std::memcpy(lanes_live, &live, sizeof(live));
      int32_t all_live = -1;  // AND of the lane masks (-1 live, 0 dead)
      for (int ii = 0; ii < L; ++ii) all_live &= lanes_live[ii];
      if (all_live == 0) {  // rare: zero the dead queries' probabilities (NaN * 0 would stay NaN)
        for (j = 0; j < F; ++j) {
          V x;
          load(x, st + j * L);
          select(x, live, x, zero);
          store(st + j * L, x);
        }
      }

      // 4. O rows = P V: QB queries x L channels per pass, each v load shared by QB FMAs.
      for (int64_t ii = 0; ii < ni; ii += QB) {
        const int64_t nq = std::min<int64_t>(QB, ni - ii);  // rows to write (lanes ≥ ni unused)
        int64_t c0 = 0;
        for (; c0 + L <= D; c0 += L) {
          V acc[QB];
          for (int qq = 0; qq < QB; ++qq) acc[qq] = zero;
          const T* vrow = vb + c0;
          const float* prow = st + ii;
          for (int64_t jj = 0; jj < F; ++jj, vrow += a.vr, prow += L) {
            V vv;
            load(vv, vrow);
            for (int qq = 0; qq < QB; ++qq) acc[qq] += prow[qq] * vv;
          }
          for (int64_t qq = 0; qq < nq; ++qq) {
            const V o = acc[qq] * inv[ii + qq];
            store(ob + (i0 + ii + qq) * o_row + c0, o);
          }
        }
        if (rem) {  // channel tail (D % L channels): the same FMAs on the padded copy vt
          V acc[QB];
          for (int qq = 0; qq < QB; ++qq) acc[qq] = zero;
          const float* prow = st + ii;
          for (int64_t jj = 0; jj < F; ++jj, prow += L) {
            V vv;
            load(vv, vt + jj * L);
            for (int qq = 0; qq < QB; ++qq) acc[qq] += prow[qq] * vv;
          }
          for (int64_t qq = 0; qq < nq; ++qq) {
            const V o = acc[qq] * inv[ii + qq];
            store_first(ob + (i0 + ii + qq) * o_row + c_tail, o, rem);
          }
        }
      }
    }
  }
}

template <class T>
void attend_base(const Attn<T>& a, int64_t i0, int64_t i1, float* scratch) {
  attend<kBase>(a, i0, i1, scratch);
}
#ifdef VDE_X86
template <class T>
VDE_TARGET_AVX2 void attend_avx2(const Attn<T>& a, int64_t i0, int64_t i1, float* scratch) {
  attend<kAvx2>(a, i0, i1, scratch);
}
template <class T>
VDE_TARGET_AVX512 void attend_avx512(const Attn<T>& a, int64_t i0, int64_t i1, float* scratch) {
  attend<kAvx512>(a, i0, i1, scratch);
}
#endif

template <class T>
using AttendFn = void (*)(const Attn<T>&, int64_t, int64_t, float*);

template <class T>
AttendFn<T> attend_kernel() {
#ifdef VDE_X86
  switch (cpu_isa()) {
    case kAvx512: return attend_avx512<T>;
    case kAvx2: return attend_avx2<T>;
    default: break;
  }
#endif
  return attend_base<T>;
}

// Runs the attention of every (b, s, h) item of p over the OpenMP threads.
template <class T>
void run(const Attn<T>& p) {
  const int64_t items = p.B * p.S * p.H;
  const int nt = max_threads();
  const bool parallel = nt > 1 && items * p.F * p.F * p.D >= (int64_t{1} << 16);
  const int nscratch = parallel ? nt : 1;
  // 64-byte aligned per-thread slices (plus one line of slack for the alignment).
  const int64_t per = (scratch_floats(p.F, p.D, is_bf16<T>) + 15) / 16 * 16;
  std::vector<float> scratch(static_cast<size_t>(per * nscratch + 16));
  float* base = scratch.data();
  base += (16 - (reinterpret_cast<uintptr_t>(base) / sizeof(float)) % 16) % 16;
  const AttendFn<T> fn = attend_kernel<T>();

  // Contiguous chunks, ~16 per thread, handed out dynamically: a thread that loses its core to
  // another process (or runs on a slower core) does not hold up the others at the barrier.
  const int64_t chunk = std::max<int64_t>(1, items / (int64_t{16} * nscratch));
  const int64_t nchunks = (items + chunk - 1) / chunk;
  VDE_OMP(parallel if (parallel) num_threads(nscratch))
  {
#ifdef _OPENMP
    float* mine = base + omp_get_thread_num() * per;
#else
    float* mine = base;
#endif
    VDE_OMP(for schedule(dynamic, 1))
    for (int64_t c = 0; c < nchunks; ++c) fn(p, c * chunk, std::min(items, (c + 1) * chunk), mine);
  }
}

}  // namespace

void temporal_attention_cpu(DType dtype, const AttentionArgs& a) {
  if (!a.q || !a.k || !a.v || !a.out)
    throw std::invalid_argument("temporal_attention_cpu: q, k, v and out must be non-null");
  if (a.B <= 0 || a.F <= 0 || a.S <= 0 || a.H <= 0 || a.D <= 0)
    throw std::invalid_argument(
        "temporal_attention_cpu: B, F, S, H and D must be positive, got B=" + std::to_string(a.B) +
        " F=" + std::to_string(a.F) + " S=" + std::to_string(a.S) + " H=" + std::to_string(a.H) +
        " D=" + std::to_string(a.D));
  if (a.q_row_stride < 0 || a.q_pix_stride < 0 || a.k_row_stride < 0 || a.k_pix_stride < 0 ||
      a.v_row_stride < 0 || a.v_pix_stride < 0)
    throw std::invalid_argument("temporal_attention_cpu: strides must be non-negative");

  const int64_t Fp = (a.F + kMaxLanes - 1) / kMaxLanes * kMaxLanes;
  std::vector<float> bias_t;
  if (a.bias) {  // transposed to [j][i] so step 2 adds it with one vector load per key
    bias_t.assign(static_cast<size_t>(a.F * Fp), 0.0f);
    for (int64_t i = 0; i < a.F; ++i)
      for (int64_t j = 0; j < a.F; ++j) bias_t[j * Fp + i] = a.bias[i * a.F + j];
  }
  with_storage(dtype, "temporal_attention_cpu", [&](auto storage) {
    using T = decltype(storage);
    const Attn<T> p{static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                    static_cast<const T*>(a.v), a.bias ? bias_t.data() : nullptr,
                    static_cast<T*>(a.out), a.B, a.F, a.S, a.H, a.D, a.H * a.D, Fp,
                    a.q_row_stride, a.q_pix_stride, a.k_row_stride, a.k_pix_stride,
                    a.v_row_stride, a.v_pix_stride, a.scale};
    run(p);
  });
}

}  // namespace vde
