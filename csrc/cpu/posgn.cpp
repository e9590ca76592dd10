// PosGN (positional group normalization) and plain group normalization over video frames,
// float32 and bfloat16 CPU kernels (bfloat16 storage: x, tables, weight, bias and y; statistics in
// fp64 and the normalisation in float32 either way, one rounding per output).
//
//   posgn:      y[n,c,p] = ((x[n,c,p] - mean[n,g]) * rstd[n,g] * w[c] + b[c]) * (1 + scale[m,c,p])
//                          + shift[m,c,p]  [→ SiLU],    m = n % M,  g = c / Cg,  Cg = C/G,
//               mean, var (biased) over the Cg*HW elements of group (n, g),  rstd = 1/sqrt(var+eps).
//   group_norm: y[n,c,p] = (x[n,c,p] - mean[v,g]) * rstd[v,g] * w[c] + b[c]  [→ SiLU],
//               v = n / F: the statistics of group (v, g) span the F consecutive rows v*F .. v*F+F-1
//               (the frames of one video in a [B*F, C, H, W] tensor): F*Cg*HW elements, read in
//               place (no permute to [B, C, F, H, W]). F = 1 is the per-image GroupNorm.
//
// Algorithm: one task per (video v, group g) (for posgn F = 1, v = n); a group is F blocks of
// L = Cg*HW contiguous floats, one per frame, C*HW floats apart.
//   pass 1, stats: shifted sums in fp64, d = x - x_first:
//     mean = x_first + Σd/L,  var = Σd²/L - (Σd/L)².
//     The shift removes the E[x²] - E[x]² cancellation when |mean| >> std; fp64 keeps the rest.
//   pass 2, one fused write per element: ((x - mean_hi) - mean_lo) * a[c] + b[c], times
//     (1 + scale), plus shift [, SiLU]; a[c] = rstd*w[c] once per channel. The mean is split in
//     two floats so x - mean is exact to fp32 even for large means (PyTorch's x*a + (b - mean*a)
//     is not). The block was just read by pass 1 and is still in L1/L2: DRAM sees x once.
//   Parallel over the N*G tasks in contiguous chunks (dynamic, ~16 per thread); when there are
//   fewer tasks than threads, the threads split each group instead.
//   Inner loops are `omp simd`, compiled for AVX-512 / AVX2+FMA / baseline and picked at run time
//   (VDENGINE_CPU_ISA=base|avx2 caps the choice, for testing).
//
// Bytes moved (minimal): read x + write y, 8 B/element, plus 8 B per element of the scale/shift
//   tables: 16 B/element when M = N; when M < N each table row is re-read N/M times, from cache
//   when the tables fit in L2/L3. The PyTorch composition (group_norm, 1 + scale, *, +) moves
//   ~44 B/element through 4 kernels and 3 temporaries.
//   group_norm: read x + write y, 8 B/element; pass 2 re-reads a video's group (F*L elements)
//   from L2 when it fits (F = 16, Cg*HW = 10*32*32: 640 KiB), else from L3/DRAM (16 B/element).
// Bound: memory bandwidth. ~12 flops/element (SiLU: ~30) against 16 bytes, far below the compute
//   roof. Measured GB/s and fraction of the copy bandwidth ("%floor") per shape: `python
//   benchmarks/kernels.py --json benchmarks/results/kernels-cpu.json`, see that file.
//   The SSE2 fallback leaves the SiLU loop scalar (GCC does not if-convert its selects without
//   SSE4.1 blends); AVX2 and AVX-512 vectorize everything.
// Channels-last tensors (torch.channels_last, the layout oneDNN's convolutions prefer) run the
//   kernel of posgn_nhwc.cpp; the struct GN and the SiLU exponential are shared (gn_common.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/ops.h"
#include "cpu/bf16.h"
#include "cpu/cpu_common.h"
#include "cpu/gn_common.h"

namespace vde {
namespace {

using namespace vde::cpu;
using namespace vde::cpu::gn;

// Σ(x - shift) and Σ(x - shift)² over x[0, len), in fp64. bfloat16 inputs: float32 partial sums
// over blocks of 4096 elements (256 per lane under AVX-512, relative error ~256·2^-24, far below
// a bfloat16 ulp), added in fp64: half the arithmetic of converting every element to fp64.
template <int ISA, class T>
VDE_INLINE void accumulate(const T* x, int64_t len, float shift, Moments& mo) {
  if constexpr (is_bf16<T>) {
    for (int64_t i0 = 0; i0 < len; i0 += 4096) {
      const int64_t i1 = std::min(len, i0 + 4096);
      float t1 = 0.0f, t2 = 0.0f;
      VDE_OMP(simd reduction(+ : t1, t2))
      for (int64_t i = i0; i < i1; ++i) {
        const float d = to_float(x[i]) - shift;
        t1 += d;
        t2 += d * d;
      }
      mo.s1 += t1;
      mo.s2 += t2;
    }
    return;
  }
  double s1 = 0.0, s2 = 0.0;
  const double sh = shift;
  VDE_OMP(simd reduction(+ : s1, s2))
  for (int64_t i = 0; i < len; ++i) {
    const double d = static_cast<double>(to_float(x[i])) - sh;
    s1 += d;
    s2 += d * d;
  }
  mo.s1 += s1;
  mo.s2 += s2;
}

// y = (((x - mhi) - mlo) * a + b) * (1 + sc) + sh  [→ SiLU], over one channel segment;
// without the tables (sc null) y = ((x - mhi) - mlo) * a + b  [→ SiLU].
template <int ISA, class T>
VDE_INLINE void apply(const T* x, const T* sc, const T* sh, T* y, int64_t len, float mhi,
                      float mlo, float a, float b, bool silu) {
  if (!sc) {
    if (silu) {
      VDE_OMP(simd)
      for (int64_t i = 0; i < len; ++i) {
        const float t = ((to_float(x[i]) - mhi) - mlo) * a + b;
        y[i] = from_float<T>(t / (1.0f + exp_poly(-t)));
      }
    } else {
      VDE_OMP(simd)
      for (int64_t i = 0; i < len; ++i)
        y[i] = from_float<T>(((to_float(x[i]) - mhi) - mlo) * a + b);
    }
  } else if (silu) {
    VDE_OMP(simd)
    for (int64_t i = 0; i < len; ++i) {
      const float t =
          (((to_float(x[i]) - mhi) - mlo) * a + b) * (1.0f + to_float(sc[i])) + to_float(sh[i]);
      y[i] = from_float<T>(t / (1.0f + exp_poly(-t)));
    }
  } else {
    VDE_OMP(simd)
    for (int64_t i = 0; i < len; ++i) {
      y[i] = from_float<T>((((to_float(x[i]) - mhi) - mlo) * a + b) * (1.0f + to_float(sc[i])) +
                           to_float(sh[i]));
    }
  }
}

// Group (v, g) as F frame blocks of L elements: element e of the group is element e % L of the
// block of row v*F + e / L. Pass 1 over elements [e0, e1) of the group.
template <int ISA, class T>
VDE_INLINE void stats_range(const GN<T>& p, int64_t v, int64_t g, int64_t e0, int64_t e1,
                            float shift, Moments& mo) {
  while (e0 < e1) {
    const int64_t f = e0 / p.L, in = e0 % p.L;
    const int64_t end = std::min(e1 - e0, p.L - in);  // to the end of this frame's block
    const T* xg = p.x + ((v * p.F + f) * p.C + g * p.Cg) * p.HW;
    accumulate<ISA>(xg + in, end, shift, mo);
    e0 += end;
  }
}

// Pass 2 over elements [e0, e1) of group (v, g), channel segment by channel segment.
template <int ISA, class T>
VDE_INLINE void apply_range(const GN<T>& p, int64_t v, int64_t g, int64_t e0, int64_t e1,
                            double mean, double rstd) {
  const float mhi = static_cast<float>(mean);
  const float mlo = static_cast<float>(mean - static_cast<double>(mhi));
  const int64_t c_first = g * p.Cg;
  int64_t e = e0;
  while (e < e1) {
    const int64_t f = e / p.L, in = e % p.L;
    const int64_t n = v * p.F + f;                              // the row of this frame
    const int64_t xoff = (n * p.C + c_first) * p.HW;            // group start in x, y
    const int64_t toff = ((n % p.M) * p.C + c_first) * p.HW;    // group start in the tables
    const int64_t cl = in / p.HW;  // channel within the group
    const int64_t seg = std::min(e1 - e, (cl + 1) * p.HW - in);  // to the channel's end
    const int64_t c = c_first + cl;
    const double w = p.w ? static_cast<double>(to_float(p.w[c])) : 1.0;
    const float a = static_cast<float>(rstd * w);
    const float b = p.b ? to_float(p.b[c]) : 0.0f;
    const T* sc = p.scale ? p.scale + toff + in : nullptr;
    const T* sh = p.shift ? p.shift + toff + in : nullptr;
    apply<ISA>(p.x + xoff + in, sc, sh, p.y + xoff + in, seg, mhi, mlo, a, b, p.silu);
    e += seg;
  }
}

template <class T>
void finalize(const GN<T>& p, const Moments& mo, float shift, double& mean, double& rstd) {
  const double inv_l = 1.0 / static_cast<double>(p.L * p.F);
  const double m1 = mo.s1 * inv_l;
  const double var = std::max(mo.s2 * inv_l - m1 * m1, 0.0);
  mean = static_cast<double>(shift) + m1;
  rstd = 1.0 / std::sqrt(var + static_cast<double>(p.eps));
}

// The group's first element (the shift of pass 1's sums).
template <class T>
inline float first_element(const GN<T>& p, int64_t v, int64_t g) {
  return to_float(p.x[(v * p.F * p.C + g * p.Cg) * p.HW]);
}

// Whole groups, tasks [t0, t1) with task = v*G + g.
template <int ISA, class T>
VDE_INLINE void groups(const GN<T>& p, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t v = t / p.G, g = t % p.G;
    const float shift = first_element(p, v, g);
    Moments mo;
    stats_range<ISA>(p, v, g, 0, p.L * p.F, shift, mo);
    double mean, rstd;
    finalize(p, mo, shift, mean, rstd);
    apply_range<ISA>(p, v, g, 0, p.L * p.F, mean, rstd);
  }
}

// One instantiation per instruction set and storage type; the helpers above inline into it and
// take its target.
template <class T>
struct Kernels {
  void (*groups)(const GN<T>&, int64_t, int64_t);
  void (*stats)(const GN<T>&, int64_t, int64_t, int64_t, int64_t, float, Moments&);
  void (*apply)(const GN<T>&, int64_t, int64_t, int64_t, int64_t, double, double);
};

template <class T>
void groups_base(const GN<T>& p, int64_t t0, int64_t t1) { groups<kBase>(p, t0, t1); }
template <class T>
void stats_base(const GN<T>& p, int64_t n, int64_t g, int64_t e0, int64_t e1, float s,
                Moments& mo) {
  stats_range<kBase>(p, n, g, e0, e1, s, mo);
}
template <class T>
void apply_base(const GN<T>& p, int64_t n, int64_t g, int64_t e0, int64_t e1, double m,
                double r) {
  apply_range<kBase>(p, n, g, e0, e1, m, r);
}
#ifdef VDE_X86
template <class T>
VDE_TARGET_AVX2 void groups_avx2(const GN<T>& p, int64_t t0, int64_t t1) {
  groups<kAvx2>(p, t0, t1);
}
template <class T>
VDE_TARGET_AVX2 void stats_avx2(const GN<T>& p, int64_t n, int64_t g, int64_t e0, int64_t e1,
                                float s, Moments& mo) {
  stats_range<kAvx2>(p, n, g, e0, e1, s, mo);
}
template <class T>
VDE_TARGET_AVX2 void apply_avx2(const GN<T>& p, int64_t n, int64_t g, int64_t e0, int64_t e1,
                                double m, double r) {
  apply_range<kAvx2>(p, n, g, e0, e1, m, r);
}
template <class T>
VDE_TARGET_AVX512_ZMM void groups_avx512(const GN<T>& p, int64_t t0, int64_t t1) {
  groups<kAvx512>(p, t0, t1);
}
template <class T>
VDE_TARGET_AVX512_ZMM void stats_avx512(const GN<T>& p, int64_t n, int64_t g, int64_t e0,
                                        int64_t e1, float s, Moments& mo) {
  stats_range<kAvx512>(p, n, g, e0, e1, s, mo);
}
template <class T>
VDE_TARGET_AVX512_ZMM void apply_avx512(const GN<T>& p, int64_t n, int64_t g, int64_t e0,
                                        int64_t e1, double m, double r) {
  apply_range<kAvx512>(p, n, g, e0, e1, m, r);
}
#endif

template <class T>
Kernels<T> kernels() {
#ifdef VDE_X86
  switch (cpu_isa()) {
    case kAvx512: return {groups_avx512<T>, stats_avx512<T>, apply_avx512<T>};
    case kAvx2: return {groups_avx2<T>, stats_avx2<T>, apply_avx2<T>};
    default: break;
  }
#endif
  return {groups_base<T>, stats_base<T>, apply_base<T>};
}

// Runs the normalisation of every group of p over the OpenMP threads.
template <class T>
void run(const GN<T>& p) {
  const Kernels<T> k = kernels<T>();
  const int64_t tasks = (p.N / p.F) * p.G;
  const int64_t group = p.L * p.F;  // elements per group
  const int64_t total = tasks * group;
  const int nt = max_threads();
  const bool parallel = nt > 1 && total >= (int64_t{1} << 15);  // below: fork/join dominates

  if (!parallel || tasks >= nt) {
    // Common case: whole groups; contiguous chunks of ~1/16 of a thread's share, handed out
    // dynamically so that a thread preempted by another process does not stall the barrier.
    const int64_t chunk = std::max<int64_t>(1, tasks / (int64_t{16} * nt));
    const int64_t nchunks = (tasks + chunk - 1) / chunk;
    VDE_OMP(parallel for schedule(dynamic, 1) if (parallel))
    for (int64_t c = 0; c < nchunks; ++c) k.groups(p, c * chunk, std::min(tasks, (c + 1) * chunk));
    return;
  }

  // Few huge groups (tasks < threads): every thread takes a slice of each group, twice.
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t v = t / p.G, g = t % p.G;
    const float shift = first_element(p, v, g);
    double s1 = 0.0, s2 = 0.0;
    VDE_OMP(parallel reduction(+ : s1, s2))
    {
#ifdef _OPENMP
      const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
      const int64_t tid = 0, nth = 1;
#endif
      int64_t e0, e1;
      split(group, nth, tid, e0, e1);
      Moments mo;
      k.stats(p, v, g, e0, e1, shift, mo);
      s1 += mo.s1;
      s2 += mo.s2;
    }
    Moments mo;
    mo.s1 = s1;
    mo.s2 = s2;
    double mean, rstd;
    finalize(p, mo, shift, mean, rstd);
    VDE_OMP(parallel)
    {
#ifdef _OPENMP
      const int64_t tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
      const int64_t tid = 0, nth = 1;
#endif
      int64_t e0, e1;
      split(group, nth, tid, e0, e1);
      k.apply(p, v, g, e0, e1, mean, rstd);
    }
  }
}

}  // namespace

void posgn_cpu(DType dtype, const PosGNArgs& a) {
  if (!a.x || !a.scale || !a.shift || !a.y)
    throw std::invalid_argument("posgn_cpu: x, scale, shift and y must be non-null");
  if (a.N <= 0 || a.C <= 0 || a.HW <= 0 || a.M <= 0 || a.G <= 0)
    throw std::invalid_argument("posgn_cpu: N, C, HW, M and G must be positive, got N=" +
                                std::to_string(a.N) + " C=" + std::to_string(a.C) +
                                " HW=" + std::to_string(a.HW) + " M=" + std::to_string(a.M) +
                                " G=" + std::to_string(a.G));
  if (a.N % a.M != 0)
    throw std::invalid_argument("posgn_cpu: N (" + std::to_string(a.N) +
                                ") must be a multiple of the table rows M (" + std::to_string(a.M) +
                                ")");
  if (a.C % a.G != 0)
    throw std::invalid_argument("posgn_cpu: C (" + std::to_string(a.C) +
                                ") must be divisible by the number of groups G (" +
                                std::to_string(a.G) + ")");

  with_storage(dtype, "posgn_cpu", [&](auto storage) {
    using T = decltype(storage);
    const GN<T> p{static_cast<const T*>(a.x), static_cast<const T*>(a.scale),
                  static_cast<const T*>(a.shift), static_cast<const T*>(a.weight),
                  static_cast<const T*>(a.bias), static_cast<T*>(a.y),
                  a.N, a.C, a.HW, a.M, a.G, a.C / a.G, (a.C / a.G) * a.HW, 1, a.eps, a.silu,
                  a.channels_last};
    if (p.nhwc) run_nhwc(p);
    else run(p);
  });
}

void group_norm_cpu(DType dtype, const GroupNormArgs& a) {
  if (!a.x || !a.y) throw std::invalid_argument("group_norm_cpu: x and y must be non-null");
  if (a.N <= 0 || a.C <= 0 || a.HW <= 0 || a.G <= 0 || a.F <= 0)
    throw std::invalid_argument("group_norm_cpu: N, C, HW, G and F must be positive, got N=" +
                                std::to_string(a.N) + " C=" + std::to_string(a.C) +
                                " HW=" + std::to_string(a.HW) + " G=" + std::to_string(a.G) +
                                " F=" + std::to_string(a.F));
  if (a.N % a.F != 0)
    throw std::invalid_argument("group_norm_cpu: N (" + std::to_string(a.N) +
                                ") must be a multiple of the frames per group F (" +
                                std::to_string(a.F) + ")");
  if (a.C % a.G != 0)
    throw std::invalid_argument("group_norm_cpu: C (" + std::to_string(a.C) +
                                ") must be divisible by the number of groups G (" +
                                std::to_string(a.G) + ")");
  with_storage(dtype, "group_norm_cpu", [&](auto storage) {
    using T = decltype(storage);
    const GN<T> p{static_cast<const T*>(a.x), nullptr, nullptr,
                  static_cast<const T*>(a.weight), static_cast<const T*>(a.bias),
                  static_cast<T*>(a.y), a.N, a.C, a.HW, 1, a.G, a.C / a.G, (a.C / a.G) * a.HW,
                  a.F, a.eps, a.silu, a.channels_last};
    if (p.nhwc) run_nhwc(p);
    else run(p);
  });
}

}  // namespace vde
