// PosGN and group normalization on channels-last tensors (torch.channels_last: x[n, p, c] at
// (n*HW + p)*C + c, tables [M, HW, C], y like x), float32 and bfloat16. The math is posgn.cpp's
// (see its top comment); only the walk over memory differs.
//
// Algorithm: one task per video v (rows v*F .. v*F+F-1, posgn F = 1): a contiguous block of
// P = F*HW pixels of C channels, every group of the video at once (a group's Cg channels are a
// short strided slice of each pixel: a task per group would read every cache line G times).
//   pass 1, stats: per channel, shifted sums d = x - x_first(g) (the group's first element, as in
//     posgn.cpp), vectorised over the channels: pixel blocks of ~16 KiB accumulate in float32
//     registers (up to 8 vectors of channels at a time: a 128-channel float32 row under AVX-512
//     is read sequentially; relative error ~block·2^-24), flushed into fp64 sums per block; a
//     group's sums are the fp64 sums of its channels'.
//   pass 2, pixel by pixel, vectorised over the channels: ((x - mean_hi[c]) - mean_lo[c]) * a[c]
//     + b[c], times (1 + scale), plus shift [, SiLU], with per-channel coefficient arrays (the
//     group's split mean, rstd*w[c], b[c]) built once per task; x, the tables and y are walked
//     sequentially, the table row and pixel tracked rather than divided out per pixel.
//   Parallel over the videos (dynamic, ~16 chunks per thread); with fewer videos than threads the
//   threads split each video's pixels for both passes (per-thread sums, reduced in fp64).
//   Compiled for AVX-512 / AVX2+FMA / baseline and picked at run time; C tails are handled.
//
// Bytes moved: as NCHW (read x, write y, read the tables) when a task's block (P*C elements) stays
//   in L2 for pass 2 (posgn: one frame, 32×32×128 float32 = 512 KiB); a whole video over F frames
//   (group_norm) is usually larger, so pass 2 re-reads x from L3 or DRAM: 12 B/element in float32
//   where NCHW, whose tasks are single groups, reads x once. Measured side by side with NCHW:
//   `python benchmarks/kernels.py --compare layout [--dtype bfloat16]`.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/ops.h"
#include "cpu/bf16.h"
#include "cpu/cpu_common.h"
#include "cpu/gn_common.h"

namespace vde {
namespace cpu {
namespace gn {
namespace {

template <int ISA>
constexpr int lanes() { return ISA == kAvx512 ? 16 : (ISA == kAvx2 ? 8 : 4); }

// Per-thread work arrays: Σd, Σd² per channel (fp64).
struct Scratch {
  std::vector<double> s1, s2;
  void resize(int64_t C) {
    s1.assign(C, 0.0);
    s2.assign(C, 0.0);
  }
};

// Per-task coefficients, C entries each: y = ((x - mhi) - mlo) * a + b.
struct Coef {
  std::vector<float> shift, mhi, mlo, a, b;
  void resize(int64_t C) {
    for (auto* v : {&shift, &mhi, &mlo, &a, &b}) v->assign(C, 0.0f);
  }
};

// The block of video v: its first pixel's channels.
template <class T>
inline const T* video_block(const GN<T>& p, int64_t v) { return p.x + v * p.F * p.HW * p.C; }

// shift[c] = the first element of c's group in video v (pixel 0, channel g*Cg).
template <class T>
void group_shifts(const GN<T>& p, int64_t v, float* shift) {
  const T* x0 = video_block(p, v);
  for (int64_t c = 0; c < p.C; ++c) shift[c] = to_float(x0[(c / p.Cg) * p.Cg]);
}

// Σd, Σd² of channels [c0, c0 + U*L) over pixels [b0, b1) of block xb (row stride C), added
// to s1, s2 (fp64): U*L float32 accumulators of each kind stay in registers over the pixels.
template <int L, int U, class T>
VDE_INLINE void stats_chunk(const T* xb, int64_t C, int64_t b0, int64_t b1, int64_t c0,
                            const float* shift, double* s1, double* s2) {
  typedef typename Vec<L>::f V;
  V sh[U], a1[U], a2[U];
  for (int u = 0; u < U; ++u) {
    load(sh[u], shift + c0 + u * L);
    a1[u] = V{};
    a2[u] = V{};
  }
  for (int64_t px = b0; px < b1; ++px) {
    const T* xr = xb + px * C + c0;
    for (int u = 0; u < U; ++u) {
      V d;
      load(d, xr + u * L);
      d -= sh[u];
      a1[u] += d;
      a2[u] += d * d;
    }
  }
  for (int u = 0; u < U; ++u) {
    for (int l = 0; l < L; ++l) {
      s1[c0 + u * L + l] += a1[u][l];
      s2[c0 + u * L + l] += a2[u][l];
    }
  }
}

// Pass 1 over pixels [p0, p1) of video v: adds Σd, Σd² per channel into s.s1, s.s2. Pixel
// blocks of ~16 KiB (kept in L1 while their channels are swept in chunks of up to 8 vectors,
// then 1, then one by one): a C ≤ 8L row (128 float32 channels under AVX-512) is one chunk,
// read sequentially.
template <int ISA, class T>
VDE_INLINE void stats_pixels(const GN<T>& p, int64_t v, int64_t p0, int64_t p1,
                             const float* shift, Scratch& s) {
  constexpr int L = lanes<ISA>();
  const int64_t C = p.C;
  const int64_t block = std::max<int64_t>(8, 16384 / (C * static_cast<int64_t>(sizeof(T))));
  const T* xb = video_block(p, v);
  double* s1 = s.s1.data();
  double* s2 = s.s2.data();
  for (int64_t b0 = p0; b0 < p1; b0 += block) {
    const int64_t b1 = std::min(p1, b0 + block);
    int64_t c = 0;
    for (; c + 8 * L <= C; c += 8 * L) stats_chunk<L, 8>(xb, C, b0, b1, c, shift, s1, s2);
    for (; c + L <= C; c += L) stats_chunk<L, 1>(xb, C, b0, b1, c, shift, s1, s2);
    for (; c < C; ++c) {  // channel tail
      float t1 = 0.0f, t2 = 0.0f;
      for (int64_t px = b0; px < b1; ++px) {
        const float d = to_float(xb[px * C + c]) - shift[c];
        t1 += d;
        t2 += d * d;
      }
      s1[c] += t1;
      s2[c] += t2;
    }
  }
}

// Pass 2 over pixels [p0, p1) of video v with the task's coefficients, pixel by pixel (the
// tables and y are read and written sequentially), vectorised over the channels.
template <int ISA, class T>
VDE_INLINE void apply_pixels(const GN<T>& p, int64_t v, int64_t p0, int64_t p1, const Coef& k) {
  const int64_t C = p.C;
  const float* mhi = k.mhi.data();
  const float* mlo = k.mlo.data();
  const float* a = k.a.data();
  const float* b = k.b.data();
  const bool silu = p.silu;
  // Pixel px of the video is pixel hw of table row m (tracked, not divided out per pixel).
  int64_t hw = p0 % p.HW, m = (v * p.F + p0 / p.HW) % p.M;
  for (int64_t px = p0; px < p1; ++px, ++hw) {
    if (hw == p.HW) {  // next frame
      hw = 0;
      m = m + 1 == p.M ? 0 : m + 1;
    }
    const int64_t off = (v * p.F * p.HW + px) * C;
    const T* x = p.x + off;
    T* y = p.y + off;
    if (!p.scale) {
      if (silu) {
        VDE_OMP(simd)
        for (int64_t c = 0; c < C; ++c) {
          const float t = ((to_float(x[c]) - mhi[c]) - mlo[c]) * a[c] + b[c];
          y[c] = from_float<T>(t / (1.0f + exp_poly(-t)));
        }
      } else {
        VDE_OMP(simd)
        for (int64_t c = 0; c < C; ++c)
          y[c] = from_float<T>(((to_float(x[c]) - mhi[c]) - mlo[c]) * a[c] + b[c]);
      }
      continue;
    }
    const T* sc = p.scale + (m * p.HW + hw) * C;
    const T* sh = p.shift + (m * p.HW + hw) * C;
    if (silu) {
      VDE_OMP(simd)
      for (int64_t c = 0; c < C; ++c) {
        const float t = (((to_float(x[c]) - mhi[c]) - mlo[c]) * a[c] + b[c]) *
                            (1.0f + to_float(sc[c])) + to_float(sh[c]);
        y[c] = from_float<T>(t / (1.0f + exp_poly(-t)));
      }
    } else {
      VDE_OMP(simd)
      for (int64_t c = 0; c < C; ++c) {
        y[c] = from_float<T>((((to_float(x[c]) - mhi[c]) - mlo[c]) * a[c] + b[c]) *
                                 (1.0f + to_float(sc[c])) + to_float(sh[c]));
      }
    }
  }
}

// The coefficients of a task from its per-channel sums over all P*C elements (shift in k.shift).
template <class T>
void finalize(const GN<T>& p, const double* s1, const double* s2, Coef& k) {
  const double inv_l = 1.0 / static_cast<double>(p.L * p.F);
  for (int64_t g = 0; g < p.G; ++g) {
    double g1 = 0.0, g2 = 0.0;
    for (int64_t c = g * p.Cg; c < (g + 1) * p.Cg; ++c) {
      g1 += s1[c];
      g2 += s2[c];
    }
    const double m1 = g1 * inv_l;
    const double var = std::max(g2 * inv_l - m1 * m1, 0.0);
    const double mean = static_cast<double>(k.shift[g * p.Cg]) + m1;
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(p.eps));
    const float mhi = static_cast<float>(mean);
    const float mlo = static_cast<float>(mean - static_cast<double>(mhi));
    for (int64_t c = g * p.Cg; c < (g + 1) * p.Cg; ++c) {
      const double w = p.w ? static_cast<double>(to_float(p.w[c])) : 1.0;
      k.mhi[c] = mhi;
      k.mlo[c] = mlo;
      k.a[c] = static_cast<float>(rstd * w);
      k.b[c] = p.b ? to_float(p.b[c]) : 0.0f;
    }
  }
}

// One instantiation per instruction set and storage type (the helpers inline into it).
template <class T>
struct Kernels {
  void (*stats)(const GN<T>&, int64_t, int64_t, int64_t, const float*, Scratch&);
  void (*apply)(const GN<T>&, int64_t, int64_t, int64_t, const Coef&);
};

template <class T>
void stats_base(const GN<T>& p, int64_t v, int64_t p0, int64_t p1, const float* sh,
                Scratch& s) {
  stats_pixels<kBase>(p, v, p0, p1, sh, s);
}
template <class T>
void apply_base(const GN<T>& p, int64_t v, int64_t p0, int64_t p1, const Coef& k) {
  apply_pixels<kBase>(p, v, p0, p1, k);
}
#ifdef VDE_X86
template <class T>
VDE_TARGET_AVX2 void stats_avx2(const GN<T>& p, int64_t v, int64_t p0, int64_t p1,
                                const float* sh, Scratch& s) {
  stats_pixels<kAvx2>(p, v, p0, p1, sh, s);
}
template <class T>
VDE_TARGET_AVX2 void apply_avx2(const GN<T>& p, int64_t v, int64_t p0, int64_t p1,
                                const Coef& k) {
  apply_pixels<kAvx2>(p, v, p0, p1, k);
}
template <class T>
VDE_TARGET_AVX512_ZMM void stats_avx512(const GN<T>& p, int64_t v, int64_t p0, int64_t p1,
                                        const float* sh, Scratch& s) {
  stats_pixels<kAvx512>(p, v, p0, p1, sh, s);
}
template <class T>
VDE_TARGET_AVX512_ZMM void apply_avx512(const GN<T>& p, int64_t v, int64_t p0, int64_t p1,
                                        const Coef& k) {
  apply_pixels<kAvx512>(p, v, p0, p1, k);
}
#endif

template <class T>
Kernels<T> kernels() {
#ifdef VDE_X86
  switch (cpu_isa()) {
    case kAvx512: return {stats_avx512<T>, apply_avx512<T>};
    case kAvx2: return {stats_avx2<T>, apply_avx2<T>};
    default: break;
  }
#endif
  return {stats_base<T>, apply_base<T>};
}

}  // namespace

template <class T>
void run_nhwc(const GN<T>& p) {
  const Kernels<T> k = kernels<T>();
  const int64_t tasks = p.N / p.F;    // videos
  const int64_t pixels = p.F * p.HW;  // per video
  const int nt = max_threads();
  const bool parallel = nt > 1 && tasks * pixels * p.C >= (int64_t{1} << 15);

  if (!parallel || tasks >= nt) {  // whole videos, contiguous chunks handed out dynamically
    const int64_t chunk = std::max<int64_t>(1, tasks / (int64_t{16} * nt));
    const int64_t nchunks = (tasks + chunk - 1) / chunk;
    VDE_OMP(parallel if (parallel))
    {
      Scratch s;
      Coef c;
      s.resize(p.C);
      c.resize(p.C);
      VDE_OMP(for schedule(dynamic, 1))
      for (int64_t ch = 0; ch < nchunks; ++ch) {
        for (int64_t v = ch * chunk; v < std::min(tasks, (ch + 1) * chunk); ++v) {
          std::fill(s.s1.begin(), s.s1.end(), 0.0);
          std::fill(s.s2.begin(), s.s2.end(), 0.0);
          group_shifts(p, v, c.shift.data());
          k.stats(p, v, 0, pixels, c.shift.data(), s);
          finalize(p, s.s1.data(), s.s2.data(), c);
          k.apply(p, v, 0, pixels, c);
        }
      }
    }
    return;
  }

  // Fewer videos than threads: every thread takes a slice of each video's pixels, twice.
  std::vector<Scratch> parts(static_cast<size_t>(nt));
  Coef c;
  c.resize(p.C);
  for (int64_t v = 0; v < tasks; ++v) {
    group_shifts(p, v, c.shift.data());
    VDE_OMP(parallel num_threads(nt))
    {
#ifdef _OPENMP
      const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
      const int tid = 0, nth = 1;
#endif
      Scratch& s = parts[tid];
      s.resize(p.C);
      int64_t p0, p1;
      split(pixels, nth, tid, p0, p1);
      k.stats(p, v, p0, p1, c.shift.data(), s);
      VDE_OMP(barrier)
      VDE_OMP(single)
      {
        for (int i = 1; i < nth; ++i) {
          for (int64_t ch = 0; ch < p.C; ++ch) {
            parts[0].s1[ch] += parts[i].s1[ch];
            parts[0].s2[ch] += parts[i].s2[ch];
          }
        }
        finalize(p, parts[0].s1.data(), parts[0].s2.data(), c);
      }  // implicit barrier: the coefficients are ready
      k.apply(p, v, p0, p1, c);
    }
  }
}

template void run_nhwc<float>(const GN<float>& p);
template void run_nhwc<bf16>(const GN<bf16>& p);

}  // namespace gn
}  // namespace cpu
}  // namespace vde
