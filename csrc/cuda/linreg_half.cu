// The linreg kernels for half (see linreg_kernels.cuh).
#include "linreg_kernels.cuh"

namespace fused_linreg::linreg_cuda {
FUSED_LINREG_INSTANTIATE_LINREG_LAUNCHERS(c10::Half);
}  // namespace fused_linreg::linreg_cuda
