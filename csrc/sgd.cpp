// sgd_: torch.optim.SGD's update of a whole list of parameters, one kernel
// pass per device. The front for both devices: argument checks (every entry,
// before anything is written), the learning rate, contiguous working copies
// and their write-back; the kernels are in cpu/sgd.cpp and cuda/sgd.cu.
#include <ATen/core/List.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

#include "checks.h"
#include "kernels.h"
#include "working_copies.h"

namespace fused_linreg {
namespace {

void check_one_element_float(const std::optional<at::Tensor>& t, const char* arg, const at::Device& device) {
  if (!t.has_value() || !t->defined()) return;
  check_float_tensor(*t, "sgd_", arg);
  TORCH_CHECK(t->numel() == 1, "fused_linreg.sgd_: ", arg, " must have one element, got shape ", t->sizes());
  TORCH_CHECK(t->device() == device, "fused_linreg.sgd_: ", arg, " is on ", t->device(), " but params are on ",
              device);
}

// A tensor lr lives on the params' device (read there, without a host sync) or on the CPU.
void check_lr_tensor(const at::Tensor& lr, at::TensorList params) {
  check_float_tensor(lr, "sgd_", "lr");
  TORCH_CHECK(lr.numel() == 1, "fused_linreg.sgd_: lr must have one element, got shape ", lr.sizes());
  TORCH_CHECK(params.empty() || lr.device() == params[0].device() || lr.device().is_cpu(),
              "fused_linreg.sgd_: lr is on ", lr.device(), " but params are on ", params[0].device());
}

// One entry's tensors: param, grad and (with momentum) buffer agree with each other.
void check_entry(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, size_t i,
                 const at::Device& device, bool use_momentum) {
  const at::Tensor& p = params[i];
  const at::Tensor& g = grads[i];
  TORCH_CHECK(p.defined(), "fused_linreg.sgd_: params[", i, "] is undefined");
  TORCH_CHECK(p.layout() == at::kStrided && at::isFloatingType(p.scalar_type()), "fused_linreg.sgd_: params[", i,
              "] must be a dense floating-point tensor, got ", p.scalar_type(), " with layout ", p.layout());
  TORCH_CHECK(p.device() == device, "fused_linreg.sgd_: params[", i, "] is on ", p.device(), " but params[0] is on ",
              device);
  check_writable({&p, "params", static_cast<int64_t>(i), true}, "sgd_");
  TORCH_CHECK(g.defined(), "fused_linreg.sgd_: grads[", i, "] is undefined (a parameter without a gradient)");
  TORCH_CHECK(g.layout() == at::kStrided, "fused_linreg.sgd_: grads[", i, "] must be dense, got layout ", g.layout(),
              " (sparse gradients are not supported)");
  TORCH_CHECK(g.scalar_type() == p.scalar_type() && g.device() == p.device() && g.sizes() == p.sizes(),
              "fused_linreg.sgd_: grads[", i, "] (", g.scalar_type(), ", ", g.device(), ", shape ", g.sizes(),
              ") must match params[", i, "] (", p.scalar_type(), ", ", p.device(), ", shape ", p.sizes(), ")");
  if (!use_momentum) return;
  const at::Tensor& b = momentum_buffers[i];
  TORCH_CHECK(b.defined(), "fused_linreg.sgd_: momentum_buffers[", i, "] is undefined");
  TORCH_CHECK(b.layout() == at::kStrided && b.scalar_type() == p.scalar_type() && b.device() == p.device() &&
                  b.sizes() == p.sizes(),
              "fused_linreg.sgd_: momentum_buffers[", i, "] (", b.scalar_type(), ", ", b.device(), ", shape ",
              b.sizes(), ") must match params[", i, "] (", p.scalar_type(), ", ", p.device(), ", shape ", p.sizes(),
              ")");
}

// The written tensors (params always, grads when unscaled in place, buffers
// with momentum) overlap nothing. Distinct storages, the common case, are
// found in O(n); only a shared storage needs the full check.
void check_lists_no_overlap(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                            bool grads_written, bool use_momentum) {
  StorageSet storages(3 * params.size());
  bool distinct_storages = true;
  for (size_t i = 0; i < params.size(); ++i) {
    distinct_storages = storages.insert(params[i]) && storages.insert(grads[i]) && distinct_storages;
    if (use_momentum) distinct_storages = storages.insert(momentum_buffers[i]) && distinct_storages;
  }
  if (distinct_storages) {
    // No two overlap; only the written tensors' own elements remain to check.
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t index = static_cast<int64_t>(i);
      if (grads_written) check_writable({&grads[i], "grads", index, true}, "sgd_");
      if (use_momentum) check_writable({&momentum_buffers[i], "momentum_buffers", index, true}, "sgd_");
    }
    return;
  }
  std::vector<OverlapArg> tensors;
  tensors.reserve(3 * params.size());
  for (size_t i = 0; i < params.size(); ++i) tensors.push_back({&params[i], "params", static_cast<int64_t>(i), true});
  for (size_t i = 0; i < grads.size(); ++i) {
    tensors.push_back({&grads[i], "grads", static_cast<int64_t>(i), grads_written});
  }
  if (use_momentum) {
    for (size_t i = 0; i < momentum_buffers.size(); ++i) {
      tensors.push_back({&momentum_buffers[i], "momentum_buffers", static_cast<int64_t>(i), true});
    }
  }
  check_no_overlap(tensors, "sgd_");
}

// Every list entry, before the kernel writes anything. lr is checked by the caller.
void check_sgd_args(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                    const c10::List<bool>& is_first_step, const SgdOptions& opt,
                    const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  check_sgd_options(opt, "sgd_");
  TORCH_CHECK(grads.size() == params.size(), "fused_linreg.sgd_: grads has ", grads.size(), " entries but params has ",
              params.size());
  const bool use_momentum = opt.momentum != 0.0;
  if (use_momentum) {
    TORCH_CHECK(momentum_buffers.size() == params.size(), "fused_linreg.sgd_: momentum_buffers has ",
                momentum_buffers.size(), " entries but params has ", params.size());
    TORCH_CHECK(is_first_step.size() == params.size(), "fused_linreg.sgd_: is_first_step has ", is_first_step.size(),
                " entries but params has ", params.size());
  }
  if (params.empty()) return;
  const at::Device device = params[0].device();
  for (size_t i = 0; i < params.size(); ++i) check_entry(params, grads, momentum_buffers, i, device, use_momentum);
  check_one_element_float(grad_scale, "grad_scale", device);
  check_one_element_float(found_inf, "found_inf", device);
  check_lists_no_overlap(params, grads, momentum_buffers, grad_scale.has_value() && grad_scale->defined(),
                         use_momentum);
}

}  // namespace

void check_sgd_call(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                    const c10::List<bool>& is_first_step, double lr, const std::optional<at::Tensor>& lr_tensor,
                    const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  if (lr_tensor.has_value()) {
    check_lr_tensor(*lr_tensor, params);
    if (lr_tensor->is_cpu()) check_lr(lr_tensor->item<double>(), "sgd_");
  } else {
    check_lr(lr, "sgd_");
  }
  check_sgd_args(params, grads, momentum_buffers, is_first_step, opt, grad_scale, found_inf);
}

namespace {

std::optional<at::Tensor> defined_or_none(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t : std::nullopt;
}

// The update on contiguous working copies, written back afterwards.
template <c10::DeviceType kDevice>
void run_sgd(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
             const c10::List<bool>& is_first_step, double lr, const std::optional<at::Tensor>& lr_tensor,
             const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
             const std::optional<at::Tensor>& found_inf) {
  if (params.empty()) return;
  // The dispatcher picks a device's kernel when any argument is there (an unused
  // momentum buffer, say); the params must be.
  TORCH_CHECK(params[0].device().type() == kDevice, "fused_linreg.sgd_: params are on ", params[0].device(),
              " but another argument is on ", c10::DeviceTypeName(kDevice));
  const c10::OptionalDeviceGuard device_guard(params[0].device());
  const bool use_momentum = opt.momentum != 0.0;
  const std::optional<at::Tensor> scale = defined_or_none(grad_scale);
  const WorkingCopies param_copies(params, /*written=*/true);
  const WorkingCopies grad_copies(grads, /*written=*/scale.has_value());  // unscaled in place
  const WorkingCopies buffer_copies(use_momentum ? momentum_buffers : at::TensorList(), /*written=*/true);
  const SgdLists lists{param_copies.tensors(), grad_copies.tensors(), buffer_copies.tensors(),
                       use_momentum ? is_first_step.vec() : std::vector<bool>()};
  DeviceKernels<kDevice>::sgd(lists, lr, lr_tensor, opt, scale, defined_or_none(found_inf));
  param_copies.copy_back();
  grad_copies.copy_back();
  buffer_copies.copy_back();
}

template <c10::DeviceType kDevice>
void sgd_float_lr(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  const c10::List<bool>& is_first_step, double lr, double weight_decay, double momentum,
                  double dampening, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
                  const std::optional<at::Tensor>& found_inf) {
  const SgdOptions opt{weight_decay, momentum, dampening, nesterov, maximize};
  check_sgd_call(params, grads, momentum_buffers, is_first_step, lr, std::nullopt, opt, grad_scale, found_inf);
  run_sgd<kDevice>(params, grads, momentum_buffers, is_first_step, lr, std::nullopt, opt, grad_scale, found_inf);
}

// An lr on the CPU is read and checked here, like a float lr; one on the
// params' device is read by the kernel (its value cannot be checked without a sync).
template <c10::DeviceType kDevice>
void sgd_tensor_lr(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   const c10::List<bool>& is_first_step, const at::Tensor& lr, double weight_decay, double momentum,
                   double dampening, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf) {
  const SgdOptions opt{weight_decay, momentum, dampening, nesterov, maximize};
  check_sgd_call(params, grads, momentum_buffers, is_first_step, 0.0, lr, opt, grad_scale, found_inf);
  const double lr_value = lr.is_cpu() ? lr.item<double>() : 0.0;
  const std::optional<at::Tensor> lr_on_device = lr.is_cpu() ? std::nullopt : std::optional<at::Tensor>(lr);
  run_sgd<kDevice>(params, grads, momentum_buffers, is_first_step, lr_value, lr_on_device, opt, grad_scale,
                   found_inf);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) {
  m.impl("sgd_", &sgd_float_lr<c10::kCPU>);
  m.impl("sgd_.tensor_lr", &sgd_tensor_lr<c10::kCPU>);
}

#ifdef FUSED_LINREG_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) {
  m.impl("sgd_", &sgd_float_lr<c10::kCUDA>);
  m.impl("sgd_.tensor_lr", &sgd_tensor_lr<c10::kCUDA>);
}
#endif

}  // namespace fused_linreg
