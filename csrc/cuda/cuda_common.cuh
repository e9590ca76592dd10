// Helpers shared by the vdengine CUDA kernels: dtype dispatch, fp32 load/store of fp32/fp16/bf16,
// 128-bit vector packs, launch error checks and device queries.
//
// VDENGINE_CUDA_SYNC=1 in the environment (read at the first launch) makes check_launch wait for
// every kernel and report its error by name: for first runs on a new GPU, never for speed.
//
// Every kernel stores in its input dtype and computes in fp32: load_* converts to float on the way
// in, store_* rounds to nearest on the way out.
#ifndef VDE_CUDA_COMMON_CUH
#define VDE_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/ops.h"

namespace vde {
namespace cu {

// ---- dtype dispatch -----------------------------------------------------------------------------

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the C++ type of `dtype`; throws std::invalid_argument otherwise.
template <typename Fn>
void dispatch_dtype(DType dtype, const char* op, Fn&& f) {
  switch (dtype) {
    case DType::f32:
      f(TypeTag<float>{});
      return;
    case DType::f16:
      f(TypeTag<__half>{});
      return;
    case DType::bf16:
      f(TypeTag<__nv_bfloat16>{});
      return;
  }
  throw std::invalid_argument(std::string(op) + ": unsupported dtype code " +
                              std::to_string(static_cast<int>(dtype)) +
                              " (expected 0 = float32, 1 = float16, 2 = bfloat16)");
}

// ---- errors -------------------------------------------------------------------------------------

// Around runtime API calls made by a launcher (device queries, function attributes).
inline void check_call(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // do not leave a non-sticky error for the next check_launch
    throw std::runtime_error(std::string(op) + ": " + what + " failed: " + cudaGetErrorString(e));
  }
}

// True when VDENGINE_CUDA_SYNC=1: read once (thread-safe static initialisation).
inline bool sync_launches() {
  static const bool on = [] {
    const char* v = std::getenv("VDENGINE_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// After a launch on `stream`: a bad configuration or a sticky error from earlier work surfaces
// here. With VDENGINE_CUDA_SYNC=1 it also waits for the device, so a fault inside the kernel is
// reported against it, not against a later call; skipped while the stream is being captured into
// a CUDA graph (nothing runs then, and a device sync would invalidate the capture).
inline void check_launch(const char* op, cudaStream_t stream) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(op) + ": CUDA kernel launch failed: " +
                             cudaGetErrorString(e));
  }
  if (!sync_launches()) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_call(cudaStreamIsCapturing(stream, &capture), op, "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone) return;
  e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string(op) +
                             ": CUDA error after this kernel (VDENGINE_CUDA_SYNC=1 synchronised "
                             "the device after its launch; the fault is in it or in work queued "
                             "before it): " + cudaGetErrorString(e));
  }
}

// ---- device queries: host calls that neither sync nor enqueue (legal during graph capture) ----

inline int current_device(const char* op) {
  int dev = 0;
  check_call(cudaGetDevice(&dev), op, "cudaGetDevice");
  return dev;
}

inline int device_attribute(cudaDeviceAttr attr, int device, const char* op) {
  int v = 0;
  check_call(cudaDeviceGetAttribute(&v, attr, device), op, "cudaDeviceGetAttribute");
  return v;
}

// Attribute Attr of the current device, queried once per device and then read from a cache:
// launchers call this on every launch. Thread-safe: a race queries twice and stores the same value.
// Only for attributes that are positive and fixed for the process (0 marks "not yet queried").
template <cudaDeviceAttr Attr>
inline int cached_device_attribute(const char* op) {
  constexpr int kMaxDevices = 64;  // devices beyond this are queried every time
  static std::atomic<int> cache[kMaxDevices];  // zero-initialised (static storage)
  const int dev = current_device(op);
  if (dev < 0 || dev >= kMaxDevices) return device_attribute(Attr, dev, op);
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    v = device_attribute(Attr, dev, op);
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

inline int num_sms(const char* op) {
  return cached_device_attribute<cudaDevAttrMultiProcessorCount>(op);
}

// The most dynamic shared memory a block may opt in to (cudaFuncSetAttribute) on this device.
inline int max_smem_per_block_optin(const char* op) {
  return cached_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(op);
}

// Blocks for a grid-stride loop over `work` items of `threads` per block: enough to fill every SM
// `waves` times over, never more than the work needs, always in the x dimension's range.
inline unsigned grid_stride_blocks(int64_t work, int threads, const char* op, int waves = 16) {
  const int64_t needed = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(num_sms(op)) * waves;
  const int64_t blocks = needed < cap ? needed : cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

inline bool aligned_to(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// ---- scalar conversions -------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// ---- packs of V consecutive elements, loaded and stored as one (up to 128-bit) access -----------
//
// The caller guarantees the address is a multiple of sizeof(Pack<T, V>) (checked on the host with
// aligned_to and stride divisibility); V = 1 is the scalar fallback with no requirement.

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Elements per 128-bit access.
template <typename T>
constexpr int vec16() {
  return static_cast<int>(16 / sizeof(T));
}

template <typename T, int V>
__device__ __forceinline__ void load_pack(const T* p, float (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_float(pk.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const float (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int i = 0; i < V; ++i) pk.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

// Four consecutive elements as a float4: one 16-byte (fp32) or 8-byte (fp16/bf16) access when
// kVec (p then aligned to 4 elements), four scalar accesses otherwise.
template <typename T, bool kVec>
__device__ __forceinline__ float4 load4(const T* p) {
  float f[4];
  if constexpr (kVec) {
    load_pack<T, 4>(p, f);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = to_float(p[i]);
  }
  return make_float4(f[0], f[1], f[2], f[3]);
}

template <typename T, bool kVec>
__device__ __forceinline__ void store4(T* p, float4 v) {
  const float f[4] = {v.x, v.y, v.z, v.w};
  if constexpr (kVec) {
    store_pack<T, 4>(p, f);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = from_float<T>(f[i]);
  }
}

// ---- shared memory ------------------------------------------------------------------------------

// The block's dynamic shared memory (one declaration for every kernel and type, 16-byte aligned).
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char vde_dynamic_smem[];
  return reinterpret_cast<T*>(vde_dynamic_smem);
}

}  // namespace cu
}  // namespace vde

#endif  // VDE_CUDA_COMMON_CUH
