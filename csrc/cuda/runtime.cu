// Small runtime queries for vdengine._C_cuda.build_info() and the lazy loader.
#include <cuda_runtime.h>

namespace vde {

int cuda_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return -1;
  }
  return n;
}

}  // namespace vde
