// The linreg kernels for double (see linreg_kernels.cuh).
#include "linreg_kernels.cuh"

namespace fused_linreg::linreg_cuda {
FUSED_LINREG_INSTANTIATE_LINREG_LAUNCHERS(double);
}  // namespace fused_linreg::linreg_cuda
