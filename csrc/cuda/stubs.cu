// TEMPORARY: placeholders until the real CUDA kernels land (each op moves to its own file).
#include <stdexcept>
#include "common/ops.h"
namespace vde {
void posgn_cuda(DType, const PosGNArgs&, void*) { throw std::runtime_error("not implemented yet"); }
void temporal_attention_cuda(DType, const AttentionArgs&, void*) { throw std::runtime_error("not implemented yet"); }
void ddim_step_cuda(DType, const StepArgs&, void*) { throw std::runtime_error("not implemented yet"); }
void dpmpp_2m_step_cuda(DType, const StepArgs&, void*) { throw std::runtime_error("not implemented yet"); }
}
