// The uses of torch internals that are not public API, in one place, so that a
// torch upgrade that moves them touches this file only: dispatch-key TLS,
// TensorImpl and autograd-metadata fields, version counters, borrowed tensors
// and, for the translation unit that includes Python.h first (python_calls.cpp),
// the THPVariable and THPGenerator object layers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/MaybeOwned.h>
#include <torch/csrc/autograd/variable.h>

#include <vector>

namespace fused_linreg {

// Removes a dispatch key from the thread's keys for a scope (autocast kernels
// call the op again below their own key).
using ExcludeDispatchKeyGuard = c10::impl::ExcludeDispatchKeyGuard;

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

// A parameter's .grad without Tensor::grad's leaf check (which only serves a
// warning about non-leaf tensors, which optimizers never hold).
inline const at::Tensor& grad_of(const at::Tensor& param) { return param.unsafeGetTensorImpl()->grad(); }

// The identity of t's storage, without the reference-count traffic of t.storage().
inline const void* storage_identity(const at::Tensor& t) {
  return t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl();
}

// What autograd's in-place rule does to a tensor an op wrote.
inline void bump_version(const at::Tensor& t) { torch::autograd::impl::bump_version(t); }

// A list of tensors borrowed from owners that outlive it, without touching
// their reference counts: copying an at::Tensor that has a live PyObject also
// increfs that object (and checks for the GIL), both ways, which for sgd_'s
// hundreds of tensors cost more than the update.
class BorrowedTensors {
 public:
  BorrowedTensors() = default;
  BorrowedTensors(BorrowedTensors&&) = default;  // the moved-from list is empty
  BorrowedTensors& operator=(BorrowedTensors&&) = delete;
  ~BorrowedTensors() {
    for (at::Tensor& t : tensors_) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
  }

  void reserve(size_t count) { tensors_.reserve(count); }
  void push_back(const at::Tensor& t) { tensors_.push_back(c10::MaybeOwnedTraits<at::Tensor>::createBorrow(t)); }
  const at::Tensor& operator[](size_t i) const { return tensors_[i]; }
  bool empty() const { return tensors_.empty(); }
  operator at::TensorList() const { return tensors_; }  // NOLINT(google-explicit-constructor)

 private:
  std::vector<at::Tensor> tensors_;
};

// For prefetching the chain of objects a tensor's data is reached through.
constexpr size_t kTensorImplBytes = sizeof(c10::TensorImpl);
inline const void* impl_address(const at::Tensor& t) { return t.unsafeGetTensorImpl(); }
inline const void* autograd_meta_address(const at::Tensor& t) { return t.unsafeGetTensorImpl()->autograd_meta(); }

}  // namespace fused_linreg

#ifdef Py_PYTHON_H
#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/autograd/python_variable.h>

namespace fused_linreg {

// Whether obj is exactly a torch.Tensor or Parameter (no other subclass: those
// may override __torch_function__).
inline bool is_exact_tensor_object(PyObject* obj) { return THPVariable_CheckExact(obj); }

// Whether obj is a torch.Tensor of any subclass.
inline bool is_tensor_object(PyObject* obj) { return THPVariable_Check(obj); }

// The tensor a tensor object holds, borrowed for as long as the object lives.
inline const at::Tensor& tensor_of(PyObject* obj) { return THPVariable_Unpack(obj); }

// A new reference to the Python object of t.
inline PyObject* tensor_object(at::Tensor t) { return THPVariable_Wrap(std::move(t)); }

// Whether obj is exactly a torch.Generator, and the generator it holds.
inline bool is_generator_object(PyObject* obj) {
  return Py_TYPE(obj) == reinterpret_cast<PyTypeObject*>(THPGeneratorClass);
}
inline const at::Generator& generator_of(PyObject* obj) { return reinterpret_cast<THPGenerator*>(obj)->cdata; }

// Whether a torch function mode (TorchFunctionMode) is active on this thread.
inline bool torch_function_mode_active() { return at::impl::torch_function_mode_enabled(); }

}  // namespace fused_linreg
#endif
