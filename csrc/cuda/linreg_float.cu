// The linreg kernels for float (see linreg_kernels.cuh).
#include "linreg_kernels.cuh"

namespace fused_linreg::linreg_cuda {
FUSED_LINREG_INSTANTIATE_LINREG_LAUNCHERS(float);
}  // namespace fused_linreg::linreg_cuda
