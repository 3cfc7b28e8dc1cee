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
// This file holds the ops (checks, working copies, dtype dispatch); the kernels
// are in linreg_kernels.cuh, compiled once per dtype by linreg_<dtype>.cu.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "kernel_utils.cuh"
#include "linreg_launch.h"

namespace fused_linreg {
namespace {

using cuda::ceil_div;
using linreg_cuda::launch_linreg_grad;
using linreg_cuda::launch_linreg_steps;
using linreg_cuda::LinregTensors;
using linreg_cuda::UpdateArgs;

std::optional<at::Tensor> defined_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t : std::nullopt;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linreg_grad_cuda(const at::Tensor& X, const at::Tensor& y,
                                                                const at::Tensor& weight,
                                                                const std::optional<at::Tensor>& bias_arg) {
  check_linreg_args(X, y, weight, bias_arg, "linreg_grad");
  TORCH_CHECK(X.size(0) >= 1, "fused_linreg.linreg_grad: X has no rows (the loss of an empty batch is undefined)");
  const c10::cuda::OptionalCUDAGuard guard(X.device());
  const at::Tensor Xc = X.contiguous(), yc = y.contiguous(), wc = weight.contiguous();
  std::optional<at::Tensor> bias = defined_or_none(bias_arg);
  if (bias) bias = bias->contiguous();
  const int64_t d = X.size(1), k = weight.size(0);
  at::Tensor loss = at::empty({}, X.options());
  at::Tensor grad_weight = at::empty({k, d}, X.options());
  at::Tensor grad_bias = at::empty({k}, X.options());
  const LinregTensors tensors{Xc, yc, wc, bias, std::nullopt, std::nullopt};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, X.scalar_type(), "fused_linreg.linreg_grad", [&] {
    launch_linreg_grad<scalar_t>(tensors, loss, grad_weight, grad_bias);
  });
  return {loss, grad_weight, grad_bias};
}

// Contiguous working copy of an in-place argument, written back on finish().
class InPlace {
 public:
  explicit InPlace(const std::optional<at::Tensor>& t)
      : original_(t.has_value() && t->defined() ? *t : at::Tensor()),
        work_(original_.defined() ? original_.contiguous() : at::Tensor()) {}
  const at::Tensor& tensor() const { return work_; }
  std::optional<at::Tensor> optional() const { return work_.defined() ? std::optional<at::Tensor>(work_) : std::nullopt; }
  void finish() {
    if (work_.defined() && !work_.is_same(original_)) original_.copy_(work_);
  }

 private:
  at::Tensor original_;
  at::Tensor work_;
};

// Steps over consecutive minibatches of `indices` (undefined: one step over
// all rows of X). Returns the per-step losses.
at::Tensor run_steps(const at::Tensor& X, const at::Tensor& y, const at::Tensor& indices, int64_t batch_size,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& weight_momentum,
                     const std::optional<at::Tensor>& bias_momentum, const UpdateArgs& args) {
  const c10::cuda::OptionalCUDAGuard guard(X.device());
  const at::Tensor Xc = X.contiguous(), yc = y.contiguous();
  const int64_t total_rows = indices.defined() ? indices.numel() : X.size(0);
  at::Tensor losses = at::empty({ceil_div(total_rows, batch_size)}, X.options());
  const bool momentum = args.opt.momentum != 0.0;
  InPlace w(weight), b(defined_or_none(bias)), wm(momentum ? weight_momentum : std::nullopt),
      bm(momentum ? bias_momentum : std::nullopt);
  const LinregTensors tensors{Xc, yc, w.tensor(), b.optional(), wm.optional(), bm.optional()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, X.scalar_type(), "fused_linreg.linreg_step_", [&] {
    launch_linreg_steps<scalar_t>(tensors, indices, batch_size, args, losses);
  });
  w.finish();
  b.finish();
  wm.finish();
  bm.finish();
  return losses;
}

at::Tensor linreg_step_cuda(const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& weight_momentum,
                            const std::optional<at::Tensor>& bias_momentum, bool is_first_step, double lr,
                            double weight_decay, double momentum, double dampening, bool nesterov, bool maximize) {
  const UpdateArgs args{lr, {weight_decay, momentum, dampening, nesterov, maximize}, is_first_step};
  check_linreg_args(X, y, weight, bias, "linreg_step_");
  check_linreg_update_args(weight, bias, weight_momentum, bias_momentum, lr, args.opt, "linreg_step_");
  check_linreg_no_overlap(X, y, at::Tensor(), weight, bias, weight_momentum, bias_momentum, momentum, "linreg_step_");
  TORCH_CHECK(X.size(0) >= 1, "fused_linreg.linreg_step_: X has no rows (the loss of an empty batch is undefined)");
  return run_steps(X, y, at::Tensor(), X.size(0), weight, bias, weight_momentum, bias_momentum, args).squeeze(0);
}

at::Tensor linreg_epoch_cuda(const at::Tensor& X, const at::Tensor& y, const at::Tensor& indices, int64_t batch_size,
                             const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& weight_momentum,
                             const std::optional<at::Tensor>& bias_momentum, bool is_first_step, double lr,
                             double weight_decay, double momentum, double dampening, bool nesterov, bool maximize) {
  const UpdateArgs args{lr, {weight_decay, momentum, dampening, nesterov, maximize}, is_first_step};
  check_linreg_args(X, y, weight, bias, "linreg_epoch_");
  check_linreg_update_args(weight, bias, weight_momentum, bias_momentum, lr, args.opt, "linreg_epoch_");
  check_epoch_indices(indices, X, batch_size);
  check_linreg_no_overlap(X, y, indices, weight, bias, weight_momentum, bias_momentum, momentum, "linreg_epoch_");
  const c10::cuda::OptionalCUDAGuard guard(X.device());
  // One host sync per epoch: an out-of-range row must raise before anything is
  // written. Only a failing check copies the indices to the host, to name the row.
  const at::Tensor rows = indices.contiguous();
  if (!at::logical_and(rows >= 0, rows < X.size(0)).all().item<bool>()) {
    check_epoch_rows_in_range(rows.cpu(), X.size(0));
  }
  return run_steps(X, y, rows, batch_size, weight, bias, weight_momentum, bias_momentum, args);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) {
  m.impl("linreg_grad", &linreg_grad_cuda);
  m.impl("linreg_step_", &linreg_step_cuda);
  m.impl("linreg_epoch_", &linreg_epoch_cuda);
}

}  // namespace fused_linreg
