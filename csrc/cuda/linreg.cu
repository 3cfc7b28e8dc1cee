// CUDA kernels of linreg_grad, linreg_step_ and linreg_epoch_: linear
// regression's loss, gradients and SGD update from ONE pass over X.
//
// A group of `lanes` lanes takes a row of X: each lane loads its packs of the
// row into registers, the group computes the row's residual r = W x + b - y
// (a fixed-order butterfly), and each lane adds r * x to accumulators for its
// own columns while the row is still in registers. Groups are then added in a
// fixed order (a butterfly inside each warp, then warps in order), giving one
// set of sums per block; with several blocks a second kernel adds the blocks'
// partial sums in block order. The final sums go to a functor that either
// stores the gradients (linreg_grad) or applies the SGD update in place
// (linreg_step_), so a step is one or two launches and nothing reads X twice.
//
// An epoch of small minibatches (at most kMinRowsPerBlock rows, the book's
// 10) runs as ONE single-block launch that loops over the steps; each step
// runs exactly the code of a one-block linreg_step_, so the results are
// bitwise those of the loop of steps. Larger minibatches loop on the host.
//
// Rows longer than a group's registers hold (32 * Tile::kCols features, e.g.
// 1024 floats for k = 1, 128 for k = 16) take a composed path with two passes
// over X (cuBLAS GEMMs) that feeds the same update functor.
//
// The front is linreg.cpp. This file picks the dtype; the kernels are in
// linreg_kernels.cuh, compiled once per dtype by linreg_<dtype>.cu.
#include <ATen/Dispatch.h>

#include "kernels.h"
#include "linreg_launch.h"

namespace fused_linreg {

void DeviceKernels<c10::kCUDA>::linreg_grad(const LinregTensors& t, const at::Tensor& loss,
                                            const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.X.scalar_type(), "fused_linreg.linreg_grad", [&] {
    linreg_cuda::launch_linreg_grad<scalar_t>(t, loss, grad_weight, grad_bias);
  });
}

void DeviceKernels<c10::kCUDA>::linreg_steps(const LinregTensors& t, const at::Tensor& rows, int64_t batch_size,
                                             const StepArgs& args, const at::Tensor& losses) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.X.scalar_type(), "fused_linreg.linreg_step_", [&] {
    linreg_cuda::launch_linreg_steps<scalar_t>(t, rows, batch_size, args, losses);
  });
}

}  // namespace fused_linreg
