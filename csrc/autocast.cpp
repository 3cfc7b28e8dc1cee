// Autocast for the ops whose torch counterparts autocast: linear runs in the
// autocast dtype like F.linear (lower-precision list), the losses in float32
// like F.mse_loss (float32 list). Registered for CPU and CUDA.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fused_linreg {
namespace {

template <c10::DeviceType device_type>
at::Tensor linear_autocast(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fused_linreg::linear", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  return op.call(at::autocast::cached_cast(dtype, x, device_type), at::autocast::cached_cast(dtype, weight, device_type),
                 at::autocast::cached_cast(dtype, bias, device_type));
}

// Both losses share one schema shape: (input, target, reduction) -> Tensor.
template <c10::DeviceType device_type>
at::Tensor loss_in_float32(const char* name, const at::Tensor& input, const at::Tensor& target,
                           c10::string_view reduction) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow(name, "")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view)>();
  return op.call(at::autocast::cached_cast(at::kFloat, input, device_type),
                 at::autocast::cached_cast(at::kFloat, target, device_type), reduction);
}

template <c10::DeviceType device_type>
at::Tensor squared_loss_autocast(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  return loss_in_float32<device_type>("fused_linreg::squared_loss", input, target, reduction);
}

template <c10::DeviceType device_type>
at::Tensor mse_loss_autocast(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  return loss_in_float32<device_type>("fused_linreg::mse_loss", input, target, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, AutocastCPU, m) {
  m.impl("linear", &linear_autocast<c10::DeviceType::CPU>);
  m.impl("squared_loss", &squared_loss_autocast<c10::DeviceType::CPU>);
  m.impl("mse_loss", &mse_loss_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fused_linreg, AutocastCUDA, m) {
  m.impl("linear", &linear_autocast<c10::DeviceType::CUDA>);
  m.impl("squared_loss", &squared_loss_autocast<c10::DeviceType::CUDA>);
  m.impl("mse_loss", &mse_loss_autocast<c10::DeviceType::CUDA>);
}

}  // namespace fused_linreg
