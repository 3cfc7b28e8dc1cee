// Autocast for the ops whose torch counterparts autocast: linear runs in the
// autocast dtype like F.linear (lower-precision list), the losses in float32
// like F.mse_loss (float32 list). Registered for CPU and CUDA.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "op_handles.h"
#include "torch_internals.h"

namespace fused_linreg {
namespace {

template <c10::DeviceType device_type>
at::Tensor linear_autocast(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  static const auto op = find_op<LinearSig>(kLinear);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  return op.call(at::autocast::cached_cast(dtype, x, device_type), at::autocast::cached_cast(dtype, weight, device_type),
                 at::autocast::cached_cast(dtype, bias, device_type));
}

// Both losses share one schema shape: (input, target, reduction) -> Tensor.
template <c10::DeviceType device_type, const char* const* Name>
at::Tensor loss_in_float32(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  static const auto op = find_op<LossSig>(*Name);
  return op.call(at::autocast::cached_cast(at::kFloat, input, device_type),
                 at::autocast::cached_cast(at::kFloat, target, device_type), reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, AutocastCPU, m) {
  m.impl("linear", &linear_autocast<c10::DeviceType::CPU>);
  m.impl("squared_loss", &loss_in_float32<c10::DeviceType::CPU, &kSquaredLoss>);
  m.impl("mse_loss", &loss_in_float32<c10::DeviceType::CPU, &kMseLoss>);
}

TORCH_LIBRARY_IMPL(fused_linreg, AutocastCUDA, m) {
  m.impl("linear", &linear_autocast<c10::DeviceType::CUDA>);
  m.impl("squared_loss", &loss_in_float32<c10::DeviceType::CUDA, &kSquaredLoss>);
  m.impl("mse_loss", &loss_in_float32<c10::DeviceType::CUDA, &kMseLoss>);
}

}  // namespace fused_linreg
