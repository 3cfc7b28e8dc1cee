// Schemas of every fused_linreg operator, in one place. Kernels register per
// device in their own files (TORCH_LIBRARY_IMPL), autograd in autograd.cpp;
// fake (meta) kernels are registered from Python (pyext/fused_linreg/_ops.py).
#include <Python.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>
#include <torch/headeronly/version.h>
#include <torch/library.h>

#include "cpu_capability.h"
#include "linear_shapes.h"

namespace fused_linreg {
PyMethodDef* python_methods();  // python_calls.cpp
}

extern "C" {
// Which torch this library was built against, in plain text: when loading it
// fails (an "undefined symbol" after a torch upgrade), fused_linreg/__init__.py
// reads this from the file to say so.
C10_EXPORT extern const char fused_linreg_built_with_torch[];
const char fused_linreg_built_with_torch[] = "fused_linreg built with torch " C10_STRINGIZE(
    TORCH_VERSION_MAJOR) "." C10_STRINGIZE(TORCH_VERSION_MINOR) "." C10_STRINGIZE(TORCH_VERSION_PATCH);
// The version alone, for fused_linreg._C.BUILT_WITH_TORCH.
constexpr size_t kBuiltWithPrefix = sizeof("fused_linreg built with torch ") - 1;

// Loading this library runs the static TORCH_LIBRARY initialisers below (the
// registration); the module itself holds the fast eager entries.
PyObject* PyInit__C(void) {
  const char* cpu_capability = nullptr;
  try {
    cpu_capability = fused_linreg::cpu_capability_name(fused_linreg::cpu_capability());
  } catch (const c10::Error& error) {  // a bad FUSED_LINREG_CPU_CAPABILITY
    PyErr_SetString(PyExc_ValueError, error.what_without_backtrace());
    return nullptr;
  }
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, fused_linreg::python_methods()};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr || PyModule_AddIntConstant(module, "SKINNY_MAX_OUT_CPU", fused_linreg::kSkinnyMaxOut) != 0 ||
      PyModule_AddIntConstant(module, "SKINNY_MAX_OUT_CUDA", fused_linreg::kCudaSkinnyMaxOut) != 0 ||
      PyModule_AddStringConstant(module, "CPU_CAPABILITY", cpu_capability) != 0 ||
      PyModule_AddStringConstant(module, "BUILT_WITH_TORCH", fused_linreg_built_with_torch + kBuiltWithPrefix) != 0) {
    Py_XDECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(fused_linreg, m) {
  // y = x @ weight.T + bias, x of shape (..., in), weight (out, in), bias (out).
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
  // grad_x = grad_out @ weight: shape (..., in).
  m.def("linear_backward_input(Tensor grad_out, Tensor weight) -> Tensor");
  // (grad_weight, grad_bias) = (grad_out^T @ x, grad_out summed over rows), one pass.
  m.def("linear_backward_params(Tensor grad_out, Tensor x) -> (Tensor, Tensor)");

  // The book's loss, 0.5 * (input - target)^2; target is reshaped to input's shape.
  m.def("squared_loss(Tensor input, Tensor target, str reduction=\"none\") -> Tensor");
  m.def("squared_loss_backward(Tensor grad_output, Tensor input, Tensor target, str reduction) -> Tensor");
  // F.mse_loss: (input - target)^2, input and target of the same shape.
  m.def("mse_loss(Tensor input, Tensor target, str reduction=\"mean\") -> Tensor");
  m.def("mse_loss_backward(Tensor grad_output, Tensor input, Tensor target, str reduction) -> Tensor");

  // torch.optim.SGD's update for a whole list of parameters. momentum_buffers and
  // is_first_step are aligned with params when momentum != 0 and empty otherwise;
  // a first-step parameter gets buf = grad (its buffer's old contents are not read).
  m.def(
      "sgd_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, bool[] is_first_step, *, "
      "float lr, float weight_decay=0., float momentum=0., float dampening=0., bool nesterov=False, "
      "bool maximize=False, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");
  // The same with the learning rate read from a one-element tensor (no host sync on CUDA).
  m.def(
      "sgd_.tensor_lr(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] momentum_buffers, bool[] is_first_step, *, "
      "Tensor lr, float weight_decay=0., float momentum=0., float dampening=0., bool nesterov=False, "
      "bool maximize=False, Tensor? grad_scale=None, Tensor? found_inf=None) -> ()");

  // Linear regression with the book's loss, (1/n) * sum_i 0.5 * ||x_i W^T + b - y_i||^2,
  // in one pass over X: X (n, d), y (n) or (n, k), weight (k, d), bias (k).
  // Returns (loss, grad_weight, grad_bias); grad_bias is computed even without a bias.
  m.def("linreg_grad(Tensor X, Tensor y, Tensor weight, Tensor? bias) -> (Tensor, Tensor, Tensor)");
  // One SGD step on that loss, in place; returns the loss before the update. The
  // momentum buffers are used when momentum != 0 (is_first_step: buf = grad).
  m.def(
      "linreg_step_(Tensor X, Tensor y, Tensor(a!) weight, Tensor(b!)? bias, Tensor(c!)? weight_momentum, "
      "Tensor(d!)? bias_momentum, bool is_first_step, *, float lr, float weight_decay=0., float momentum=0., "
      "float dampening=0., bool nesterov=False, bool maximize=False) -> Tensor");
  // A whole epoch: step j is linreg_step_ on rows indices[j*batch_size : (j+1)*batch_size].
  // Returns the per-step losses. Bitwise identical to the loop of linreg_step_.
  m.def(
      "linreg_epoch_(Tensor X, Tensor y, Tensor indices, int batch_size, Tensor(a!) weight, Tensor(b!)? bias, "
      "Tensor(c!)? weight_momentum, Tensor(d!)? bias_momentum, bool is_first_step, *, float lr, "
      "float weight_decay=0., float momentum=0., float dampening=0., bool nesterov=False, "
      "bool maximize=False) -> Tensor");
  // The normal equations' sums of (weighted) least squares in one pass over X:
  // sum_i w_i a_i a_i^T, a_i = [x_i - x_shift, y_i - y_shift, 1], in float64,
  // shape (d + k + 1, d + k + 1); sample_weight (n) non-negative (None: all 1).
  m.def("linreg_gram(Tensor X, Tensor y, Tensor? sample_weight, Tensor x_shift, Tensor y_shift) -> Tensor");
}
