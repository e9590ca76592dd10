// TEMPORARY: placeholders until the real CPU kernels land (each op moves to its own file).
#include <stdexcept>
#include "common/ops.h"
namespace vde {
void posgn_cpu(const PosGNArgs&) { throw std::runtime_error("posgn_cpu: not implemented yet"); }
void temporal_attention_cpu(const AttentionArgs&) { throw std::runtime_error("not implemented yet"); }
void ddim_step_cpu(const StepArgs&) { throw std::runtime_error("not implemented yet"); }
void dpmpp_2m_step_cpu(const StepArgs&) { throw std::runtime_error("not implemented yet"); }
}
