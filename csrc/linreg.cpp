// The fused linear-regression ops: linreg_grad (the loss and both gradients),
// linreg_step_ (one SGD step in place) and linreg_epoch_ (a whole epoch of
// steps), each from one pass over the minibatch's rows of X per step. The
// loss is the book's, (1/n) * sum_i 0.5 * ||x_i W^T + b - y_i||^2, and the
// update torch.optim.SGD's. One front for both devices (checks, contiguous
// inputs and working copies of the written tensors, outputs, write-back);
// the kernels are in cpu/linreg.cpp and cuda/linreg.cu.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "checks.h"
#include "kernels.h"
#include "working_copies.h"

namespace fused_linreg {
namespace {

// X (n, d), y (n) or (n, k), weight (k, d), bias (k).
void check_linreg_args(const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, const char* op) {
  check_float_tensor(X, op, "X");
  check_float_tensor(y, op, "y");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(y, X, op, "y", "X");
  check_same_dtype_device(weight, X, op, "weight", "X");
  TORCH_CHECK(X.dim() == 2, "fused_linreg.", op, ": X must be 2-D (n, d), got shape ", X.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == X.size(1), "fused_linreg.", op, ": weight must have shape (k, ",
              X.size(1), ") to match X (shape ", X.sizes(), "), got ", weight.sizes());
  const int64_t k = weight.size(0);
  const bool y_fits = (y.dim() == 2 && y.size(0) == X.size(0) && y.size(1) == k) ||
                      (y.dim() == 1 && y.size(0) == X.size(0) && k == 1);
  TORCH_CHECK(y_fits, "fused_linreg.", op, ": y must have shape (", X.size(0), ", ", k, ")", k == 1 ? " or (n,)" : "",
              " to match X (shape ", X.sizes(), ") and weight (shape ", weight.sizes(), "), got ", y.sizes());
  if (bias.has_value() && bias->defined()) {
    check_float_tensor(*bias, op, "bias");
    check_same_dtype_device(*bias, X, op, "bias", "X");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == k, "fused_linreg.", op, ": bias must have shape (", k,
                ",), got ", bias->sizes());
  }
}

// linreg_grad and linreg_step_ use every row of X (an epoch, the rows its indices name).
void check_has_rows(const at::Tensor& X, const char* op) {
  TORCH_CHECK(X.size(0) >= 1, "fused_linreg.", op, ": X has no rows (the loss of an empty batch is undefined)");
}

void check_momentum_buffer(const std::optional<at::Tensor>& buffer, const at::Tensor& param, const char* op,
                           const char* arg) {
  TORCH_CHECK(buffer.has_value() && buffer->defined(), "fused_linreg.", op, ": ", arg,
              " is required when momentum != 0");
  TORCH_CHECK(buffer->layout() == at::kStrided && buffer->scalar_type() == param.scalar_type() &&
                  buffer->device() == param.device() && buffer->sizes() == param.sizes(),
              "fused_linreg.", op, ": ", arg, " (", buffer->scalar_type(), ", ", buffer->device(), ", shape ",
              buffer->sizes(), ") must match its parameter (", param.scalar_type(), ", ", param.device(), ", shape ",
              param.sizes(), ")");
}

void check_update_args(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& weight_momentum,
                       const std::optional<at::Tensor>& bias_momentum, const StepArgs& args, const char* op) {
  check_lr(args.lr, op);
  check_sgd_options(args.opt, op);
  if (args.opt.momentum != 0.0) {
    check_momentum_buffer(weight_momentum, weight, op, "weight_momentum");
    if (bias.has_value() && bias->defined()) check_momentum_buffer(bias_momentum, *bias, op, "bias_momentum");
  }
}

// The steps write weight, bias and, with momentum, the buffers; they read X, y
// and the epoch's indices (undefined for a step) meanwhile: the epoch reads
// each minibatch after the previous update.
void check_no_overlap_of_updates(const at::Tensor& X, const at::Tensor& y, const at::Tensor& indices,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 const std::optional<at::Tensor>& weight_momentum,
                                 const std::optional<at::Tensor>& bias_momentum, double momentum, const char* op) {
  const at::Tensor none;
  const auto or_none = [&](const std::optional<at::Tensor>& t) { return t.has_value() ? &*t : &none; };
  const bool buffers_written = momentum != 0.0;
  check_no_overlap({{&X, "X", -1, false},
                    {&y, "y", -1, false},
                    {&indices, "indices", -1, false},
                    {&weight, "weight", -1, true},
                    {or_none(bias), "bias", -1, true},
                    {or_none(weight_momentum), "weight_momentum", -1, buffers_written},
                    {or_none(bias_momentum), "bias_momentum", -1, buffers_written}},
                   op);
}

// indices: int64 (m,) on X's device.
void check_epoch_indices(const at::Tensor& indices, const at::Tensor& X, int64_t batch_size) {
  TORCH_CHECK(batch_size >= 1, "fused_linreg.linreg_epoch_: batch_size must be >= 1, got ", batch_size);
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.dim() == 1, "fused_linreg.linreg_epoch_: indices must be ",
              "a 1-D int64 tensor, got ", indices.scalar_type(), " of shape ", indices.sizes());
  TORCH_CHECK(indices.device() == X.device(), "fused_linreg.linreg_epoch_: indices is on ", indices.device(),
              " but X is on ", X.device());
  TORCH_CHECK(indices.numel() >= 1, "fused_linreg.linreg_epoch_: indices is empty (an epoch needs at least one row)");
}

// Every entry of the contiguous int64 `rows` is a row of X (num_rows rows); the
// error names the first one that is not. On a GPU one reduction decides (a
// host sync per epoch: an out-of-range row must raise before anything is
// written); only a failing check copies the rows to the host, to name the row.
void check_rows_in_range(const at::Tensor& rows, int64_t num_rows) {
  if (!rows.is_cpu()) {
    if (at::logical_and(rows >= 0, rows < num_rows).all().item<bool>()) return;
    check_rows_in_range(rows.cpu(), num_rows);
    return;
  }
  const int64_t* ids = rows.const_data_ptr<int64_t>();
  // One pass with no branch per index (it vectorises): an index is in range
  // when neither it nor num_rows - 1 - it is negative, so the sign bit of the
  // two OR-ed over all indices says whether any is out of range.
  const int64_t count = rows.numel();
  const uint64_t last_row = static_cast<uint64_t>(num_rows) - 1;
  uint64_t signs = 0;
  for (int64_t i = 0; i < count; ++i) {
    signs |= static_cast<uint64_t>(ids[i]) | (last_row - static_cast<uint64_t>(ids[i]));
  }
  if ((signs >> 63) == 0) return;
  for (int64_t i = 0; i < count; ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < num_rows, "fused_linreg.linreg_epoch_: indices[", i, "] = ", ids[i],
                " is out of range for X with ", num_rows, " rows");
  }
}

std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

at::Tensor or_undefined(const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

template <c10::DeviceType kDevice>
std::tuple<at::Tensor, at::Tensor, at::Tensor> linreg_grad(const at::Tensor& X, const at::Tensor& y,
                                                           const at::Tensor& weight,
                                                           const std::optional<at::Tensor>& bias) {
  check_linreg_args(X, y, weight, bias, "linreg_grad");
  check_has_rows(X, "linreg_grad");
  const c10::OptionalDeviceGuard device_guard(X.device());
  const LinregTensors t{X.contiguous(), y.contiguous(), weight.contiguous(), contiguous_or_none(bias), std::nullopt,
                        std::nullopt};
  const int64_t d = X.size(1), k = weight.size(0);
  at::Tensor loss = at::empty({}, X.options());
  at::Tensor grad_weight = at::empty({k, d}, X.options());
  at::Tensor grad_bias = at::empty({k}, X.options());
  DeviceKernels<kDevice>::linreg_grad(t, loss, grad_weight, grad_bias);
  return {loss, grad_weight, grad_bias};
}

// Steps over consecutive minibatches of `rows` (undefined: one step over all
// rows of X), on contiguous working copies of the written tensors. Returns the
// per-step losses.
template <c10::DeviceType kDevice>
at::Tensor run_steps(const at::Tensor& X, const at::Tensor& y, const at::Tensor& rows, int64_t batch_size,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& weight_momentum,
                     const std::optional<at::Tensor>& bias_momentum, const StepArgs& args) {
  const c10::OptionalDeviceGuard device_guard(X.device());
  const int64_t total_rows = rows.defined() ? rows.numel() : X.size(0);
  at::Tensor losses = at::empty({(total_rows + batch_size - 1) / batch_size}, X.options());
  const bool momentum = args.opt.momentum != 0.0;
  const std::array<at::Tensor, 4> written{weight, or_undefined(bias),
                                          momentum ? or_undefined(weight_momentum) : at::Tensor(),
                                          momentum ? or_undefined(bias_momentum) : at::Tensor()};
  const WorkingCopies copies(written, /*written=*/true);
  const at::TensorList work = copies.tensors();
  const LinregTensors t{X.contiguous(), y.contiguous(), work[0], defined_or_none(work[1]), defined_or_none(work[2]),
                        defined_or_none(work[3])};
  DeviceKernels<kDevice>::linreg_steps(t, rows, batch_size, args, losses);
  copies.copy_back();
  return losses;
}

template <c10::DeviceType kDevice>
at::Tensor linreg_step_(const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& weight_momentum,
                        const std::optional<at::Tensor>& bias_momentum, bool is_first_step, double lr,
                        double weight_decay, double momentum, double dampening, bool nesterov, bool maximize) {
  const StepArgs args{lr, {weight_decay, momentum, dampening, nesterov, maximize}, is_first_step};
  check_linreg_args(X, y, weight, bias, "linreg_step_");
  check_update_args(weight, bias, weight_momentum, bias_momentum, args, "linreg_step_");
  check_no_overlap_of_updates(X, y, at::Tensor(), weight, bias, weight_momentum, bias_momentum, momentum,
                              "linreg_step_");
  check_has_rows(X, "linreg_step_");
  return run_steps<kDevice>(X, y, at::Tensor(), X.size(0), weight, bias, weight_momentum, bias_momentum, args)
      .squeeze(0);
}

template <c10::DeviceType kDevice>
at::Tensor linreg_epoch_(const at::Tensor& X, const at::Tensor& y, const at::Tensor& indices, int64_t batch_size,
                         const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& weight_momentum,
                         const std::optional<at::Tensor>& bias_momentum, bool is_first_step, double lr,
                         double weight_decay, double momentum, double dampening, bool nesterov, bool maximize) {
  const StepArgs args{lr, {weight_decay, momentum, dampening, nesterov, maximize}, is_first_step};
  check_linreg_args(X, y, weight, bias, "linreg_epoch_");
  check_update_args(weight, bias, weight_momentum, bias_momentum, args, "linreg_epoch_");
  check_epoch_indices(indices, X, batch_size);
  check_no_overlap_of_updates(X, y, indices, weight, bias, weight_momentum, bias_momentum, momentum,
                              "linreg_epoch_");
  const c10::OptionalDeviceGuard device_guard(X.device());
  const at::Tensor rows = indices.contiguous();
  check_rows_in_range(rows, X.size(0));
  return run_steps<kDevice>(X, y, rows, batch_size, weight, bias, weight_momentum, bias_momentum, args);
}

template <c10::DeviceType kDevice>
void register_linreg(torch::Library& m) {
  m.impl("linreg_grad", &linreg_grad<kDevice>);
  m.impl("linreg_step_", &linreg_step_<kDevice>);
  m.impl("linreg_epoch_", &linreg_epoch_<kDevice>);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) { register_linreg<c10::kCPU>(m); }

#ifdef FUSED_LINREG_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) { register_linreg<c10::kCUDA>(m); }
#endif

}  // namespace fused_linreg
