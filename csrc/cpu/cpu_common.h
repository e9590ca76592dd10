// Helpers shared by the vdengine CPU kernels: OpenMP pragma macros, forced inlining, x86 target
// attributes, the run-time instruction-set choice and the OpenMP thread count.
//
// Instruction-set dispatch: a kernel compiles its hot code once per instruction set (a template on
// the Isa value, instantiated in functions marked VDE_TARGET_AVX2 / VDE_TARGET_AVX512*) and picks
// one per call with cpu_isa(): the best the CPU supports, capped by VDENGINE_CPU_ISA=base|avx2
// (for testing; never a raise). Detected once per process (the static in the inline cpu_isa() is
// shared by every translation unit).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

// VDE_OMP(parallel for ...) → #pragma omp parallel for ...; nothing without OpenMP.
#ifdef _OPENMP
#define VDE_PRAGMA(x) _Pragma(#x)
#define VDE_OMP(...) VDE_PRAGMA(omp __VA_ARGS__)
#else
#define VDE_OMP(...)
#endif

// Helpers of a per-ISA template must inline into the VDE_TARGET_* function that instantiates it,
// so that they are compiled for that function's instruction set.
#define VDE_INLINE inline __attribute__((always_inline))

#if defined(__GNUC__) && defined(__x86_64__)
#define VDE_X86 1
#define VDE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define VDE_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
// As VDE_TARGET_AVX512, and GCC's auto-vectorizer uses 512-bit registers (its default tuning
// prefers 256-bit ones); Clang does not take prefer-vector-width in a target attribute.
#if defined(__clang__)
#define VDE_TARGET_AVX512_ZMM VDE_TARGET_AVX512
#else
#define VDE_TARGET_AVX512_ZMM \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")))
#endif
#endif

namespace vde {
namespace cpu {

// ---- instruction-set dispatch -------------------------------------------------------------------
enum Isa : int { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

inline Isa cpu_isa() {
  static const Isa isa = [] {
    int best = kBase;
#ifdef VDE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = kAvx2;
    if (best == kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      best = kAvx512;
#endif
    if (const char* e = std::getenv("VDENGINE_CPU_ISA")) {  // a cap, never a raise
      const std::string s(e);
      if (s == "base") best = kBase;
      if (s == "avx2") best = std::min(best, static_cast<int>(kAvx2));
    }
    return static_cast<Isa>(best);
  }();
  return isa;
}

// ---- threads ------------------------------------------------------------------------------------
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace cpu
}  // namespace vde
