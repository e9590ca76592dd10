// bfloat16 storage for the CPU kernels: the storage types, their conversions to and from float32,
// generic-vector load/store for float32 and bfloat16, and the run-time dtype dispatch.
//
// Storage vs compute: the kernels are templates on their storage type T (float or bf16); they load
// T, compute in float32 (statistics in fp64 where the float32 kernel does), and round the result
// to T once at the store. With T = float every helper here is the identity, so the float32
// instantiation is the code it was before bfloat16 existed.
//
// Conversions (bit for bit what torch's .to() does, NaN payloads aside):
//   bf16 -> float32: the 16 bits become the high half of the float (a shift, exact).
//   float32 -> bf16: round to nearest, ties to even, by integer ops: (u + 0x7FFF + lsb) >> 16,
//     lsb = bit 16 of u; overflow rounds to ±inf; subnormals round like any other value (no
//     flush to zero); NaN becomes the quiet NaN 0x7FC0 (c10::BFloat16's scalar choice; torch's
//     vectorized conversion writes 0xFFFF, also a NaN).
//   In an `omp simd` loop GCC turns the scalar helpers into vector code for the loop's target:
//   AVX-512 (vpmovzxwd + vpslld to load, vpaddd/vpsrld + vpermt2w to store), AVX2, or SSE2
//   (punpck*). AVX512-BF16's vcvtneps2bf16 would save ~5 integer ops per 16 stores, but it flushes
//   subnormals (no bit-exact match with torch) and the stores are a small part of every kernel,
//   all of which are bound by memory bandwidth or by the float32 arithmetic.
//   The explicit vector forms (load/store of Vec<L>) are for the kernels written with GCC vector
//   extensions (temporal_attention.cpp): L lanes, 16 under an AVX-512 target, 8 AVX2, 4 SSE2.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/ops.h"
#include "cpu/cpu_common.h"

namespace vde {
namespace cpu {

// A bfloat16 as stored by torch.bfloat16: the high 16 bits of the float32 with the same value
// (after rounding). A struct, not an integer, so that a bf16 pointer never mixes with others.
struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 is two bytes");

template <class T>
constexpr bool is_bf16 = std::is_same_v<T, bf16>;

// ---- scalar -------------------------------------------------------------------------------------

VDE_INLINE float to_float(float v) { return v; }
VDE_INLINE float to_float(bf16 v) {
  const uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// float32 -> bfloat16, round to nearest even (see the top comment).
VDE_INLINE bf16 bf16_round(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  r = f != f ? 0x7FC0u : r;
  return bf16{static_cast<uint16_t>(r)};
}

// A float32 result stored as T: itself, or rounded to bfloat16.
template <class T>
VDE_INLINE T from_float(float f) {
  if constexpr (is_bf16<T>) return bf16_round(f);
  else return f;
}

// ---- L-lane vectors (GCC/Clang generic vectors) -------------------------------------------------
// Helpers take references: passing vectors by value would change the ABI between targets.
template <int L>
struct Vec {
  typedef float f __attribute__((vector_size(sizeof(float) * L)));
  typedef int32_t i __attribute__((vector_size(sizeof(int32_t) * L)));
  typedef uint32_t u __attribute__((vector_size(sizeof(uint32_t) * L)));
  typedef uint16_t h __attribute__((vector_size(sizeof(uint16_t) * L)));
};

// Lanes of a float vector type V.
template <class V>
constexpr int lanes_of = static_cast<int>(sizeof(V) / sizeof(float));

template <class V>
VDE_INLINE void load(V& r, const float* p) { std::memcpy(&r, p, sizeof(V)); }
template <class V>
VDE_INLINE void store(float* p, const V& r) { std::memcpy(p, &r, sizeof(V)); }

// L bfloat16 values widened to float32 (exact).
template <class V>
VDE_INLINE void load(V& r, const bf16* p) {
  constexpr int L = lanes_of<V>;
  typename Vec<L>::h raw;
  std::memcpy(&raw, p, sizeof(raw));
  const typename Vec<L>::u wide = __builtin_convertvector(raw, typename Vec<L>::u) << 16;
  r = reinterpret_cast<V>(wide);
}

// L float32 values rounded to bfloat16 (as bf16_round, lane-wise).
template <class V>
VDE_INLINE void store(bf16* p, const V& r) {
  constexpr int L = lanes_of<V>;
  typedef typename Vec<L>::u U;
  const U u = reinterpret_cast<U>(r);
  U rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const U nan = reinterpret_cast<U>(r != r);  // all-ones lanes where r is NaN
  rounded = (rounded & ~nan) | ((U{} + 0x7FC0u) & nan);
  const typename Vec<L>::h narrow = __builtin_convertvector(rounded, typename Vec<L>::h);
  std::memcpy(p, &narrow, sizeof(narrow));
}

// ---- run-time dtype dispatch --------------------------------------------------------------------

// fn(T{}) with T the storage type of dtype: float (f32) or bf16. Other dtypes throw (the Python
// wrappers refuse them first, naming the argument).
template <class Fn>
void with_storage(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); return;
    case DType::bf16: fn(bf16{}); return;
    default:
      throw std::invalid_argument(std::string(op) + ": dtype code " +
                                  std::to_string(static_cast<int>(dtype)) +
                                  " is not implemented on the CPU (float32 = 0, bfloat16 = 2)");
  }
}

}  // namespace cpu
}  // namespace vde
