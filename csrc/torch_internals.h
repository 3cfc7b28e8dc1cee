// The uses of torch internals that are not public API, in one place, so that a
// torch upgrade that moves them touches this file only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/variable.h>

namespace fused_linreg {

// Whether a torch.func transform (grad, vjp, jvp, vmap, ...) is running on this
// thread: functorch includes its front-mode dispatch key in the thread's key
// set while its stack of transforms is not empty.
inline bool functorch_transform_active() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

// Whether t carries a forward-mode tangent (torch.autograd.forward_ad). The
// AutogradMeta read first is lock-free: a tensor that never had a tangent has
// no forward-grad record, and Tensor::_fw_grad takes a mutex.
inline bool has_tangent(const at::Tensor& t) {
  if (!t.defined()) return false;
  const auto* meta = static_cast<const torch::autograd::AutogradMeta*>(t.unsafeGetTensorImpl()->autograd_meta());
  return meta != nullptr && meta->fw_grad_ != nullptr && t._fw_grad(/*level=*/0).defined();
}

// Whether t is a functorch wrapper: a tensor seen through grad/jvp (TensorWrapper)
// or vmap (BatchedTensor).
inline bool is_functorch_wrapper(const at::Tensor& t) {
  constexpr c10::DispatchKeySet kWrapperKeys({c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::FuncTorchBatched});
  return t.defined() && t.key_set().has_any(kWrapperKeys);
}

}  // namespace fused_linreg
