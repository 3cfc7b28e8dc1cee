// Fast entries from Python into the ops, for eager calls (fused_linreg._C.*).
// A call through torch.ops parses its arguments against the schema and runs
// every kernel boxed: microseconds, more than the kernels take at the sizes
// people train at. These entries take positional arguments, call the typed
// op through the dispatcher (so autograd, autocast, tracing modes and every
// device kernel still apply), and return NotImplemented for anything outside
// the common case (another Python type, a __torch_function__ override, a
// dtype promotion, a broadcast): the Python wrappers then take their general
// path through torch.ops, the path torch.compile traces too.
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/GradMode.h>

#include <utility>
#include <vector>

#include "op_handles.h"

namespace fused_linreg {
namespace {

// A tensor that the op may receive directly: a dense Tensor or Parameter (a
// subclass may override __torch_function__). Every entry also checks, once,
// that no torch function mode is active (no_function_mode).
bool is_plain_tensor(PyObject* obj) {
  return THPVariable_CheckExact(obj) && THPVariable_Unpack(obj).layout() == at::kStrided;
}

bool no_function_mode() { return !at::impl::torch_function_mode_enabled(); }

bool is_plain_optional_tensor(PyObject* obj) { return obj == Py_None || is_plain_tensor(obj); }

std::optional<at::Tensor> optional_tensor(PyObject* obj) {
  if (obj == Py_None) return std::nullopt;
  return THPVariable_Unpack(obj);
}

// A Python float or int (not bool, not a string: those take the general path).
bool read_number(PyObject* obj, double& value) {
  if (PyFloat_CheckExact(obj)) {
    value = PyFloat_AS_DOUBLE(obj);
    return true;
  }
  if (!PyLong_CheckExact(obj)) return false;
  value = PyLong_AsDouble(obj);
  if (value == -1.0 && PyErr_Occurred()) {  // too large for a double
    PyErr_Clear();
    return false;
  }
  return true;
}

bool read_bool(PyObject* obj, bool& value) {
  if (obj != Py_True && obj != Py_False) return false;
  value = obj == Py_True;
  return true;
}

bool read_reduction(PyObject* obj, c10::string_view& value) {
  if (!PyUnicode_CheckExact(obj)) return false;
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(obj, &size);
  if (data == nullptr) {
    PyErr_Clear();
    return false;
  }
  value = c10::string_view(data, static_cast<size_t>(size));
  return value == "none" || value == "mean" || value == "sum";
}

// Lets other Python threads run while a kernel does.
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  ~GilRelease() { PyEval_RestoreThread(state_); }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  PyThreadState* state_;
};

// linear(x, weight, bias): weight 2-D and a bias the op takes as it is.
PyObject* linear_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 3 || !no_function_mode() || !is_plain_tensor(args[0]) || !is_plain_tensor(args[1]) ||
      !is_plain_optional_tensor(args[2])) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& weight = THPVariable_Unpack(args[1]);
  const std::optional<at::Tensor> bias = optional_tensor(args[2]);
  // F.linear's 1-D weight and broadcast biases are the wrapper's; a 1-D bias of
  // the wrong length goes to the op, whose error names it.
  if (weight.dim() != 2 || (bias.has_value() && (bias->dim() != 1 || (bias->size(0) == 1 && weight.size(0) != 1)))) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  static const auto op = find_op<LinearSig>(kLinear);
  at::Tensor out;
  {
    GilRelease no_gil;
    out = op.call(THPVariable_Unpack(args[0]), weight, bias);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

// squared_loss / mse_loss(input, target, reduction): one dtype, a valid
// reduction, and for mse_loss one shape (no broadcast, no warning).
template <const char* const* Name, bool kSameShape>
PyObject* loss_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  c10::string_view reduction;
  if (nargs != 3 || !no_function_mode() || !is_plain_tensor(args[0]) || !is_plain_tensor(args[1]) ||
      !read_reduction(args[2], reduction)) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& input = THPVariable_Unpack(args[0]);
  const at::Tensor& target = THPVariable_Unpack(args[1]);
  if (input.scalar_type() != target.scalar_type() || (kSameShape && input.sizes() != target.sizes())) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  static const auto op = find_op<LossSig>(*Name);
  at::Tensor out;
  {
    GilRelease no_gil;
    out = op.call(input, target, reduction);
  }
  return THPVariable_Wrap(std::move(out));
  END_HANDLE_TH_ERRORS
}

// ---------------------------------------------------------------------------
// sgd_: the functional update, and the step of fused_linreg.optim.SGD.
// ---------------------------------------------------------------------------

struct SgdHyper {
  double lr;
  PyObject* lr_tensor;  // a one-element tensor given as lr, or nullptr
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
};

// args: lr, weight_decay, momentum, dampening, nesterov, maximize.
bool read_hyper(PyObject* const* args, SgdHyper& hyper) {
  hyper.lr_tensor = is_plain_tensor(args[0]) ? args[0] : nullptr;
  return (hyper.lr_tensor != nullptr || read_number(args[0], hyper.lr)) && read_number(args[1], hyper.weight_decay) &&
         read_number(args[2], hyper.momentum) && read_number(args[3], hyper.dampening) &&
         read_bool(args[4], hyper.nesterov) && read_bool(args[5], hyper.maximize);
}

// A list of tensors borrowed from Python objects that outlive the call, without
// touching their reference counts: copying an at::Tensor that has a live
// PyObject also increfs that object (and checks for the GIL), both ways, which
// for sgd_'s hundreds of tensors cost more than the update.
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

// The tensors of one sgd_ call (one device). first_step[i]: buffers[i] is new
// (held in new_buffers) and must be stored at slots[i] of the caller's list if
// the step was not skipped.
struct SgdCall {
  SgdCall(at::Device device, size_t capacity) : device(device) {
    params.reserve(capacity);
    grads.reserve(capacity);
    buffers.reserve(capacity);
    first_step.reserve(capacity);
    slots.reserve(capacity);
  }

  at::Device device;
  BorrowedTensors params;
  BorrowedTensors grads;
  BorrowedTensors buffers;
  c10::List<bool> first_step;
  std::vector<Py_ssize_t> slots;
  std::vector<at::Tensor> new_buffers;  // owned here; buffers borrows them
};

// Adds a parameter; `buffer` is the caller's entry (None: no buffer yet).
void add_param(SgdCall& call, const at::Tensor& param, const at::Tensor& grad, PyObject* buffer, Py_ssize_t slot,
               bool use_momentum) {
  call.params.push_back(param);
  call.grads.push_back(grad);
  if (!use_momentum) return;
  const bool first = buffer == Py_None;
  if (first) {
    // The kernel never reads a first-step buffer (it sets buf = g): empty is enough.
    call.new_buffers.push_back(at::empty_like(param));
    call.buffers.push_back(call.new_buffers.back());
  } else {
    call.buffers.push_back(THPVariable_Unpack(buffer));
  }
  call.first_step.push_back(first);
  call.slots.push_back(slot);
}

at::Tensor on_device(const at::Tensor& t, const at::Device& device) {
  // A copy to the host must be synchronous: the kernel may read found_inf there.
  return t.device() == device ? t : t.to(device, /*non_blocking=*/!device.is_cpu());
}

std::optional<at::Tensor> on_device(const std::optional<at::Tensor>& t, const at::Device& device) {
  if (!t.has_value()) return std::nullopt;
  return on_device(*t, device);
}

// Runs sgd_ on `call` (under no_grad, as optimizers do) and returns whether the
// step was applied (found_inf unset or zero).
bool run_sgd(const SgdCall& call, const SgdHyper& hyper, const std::optional<at::Tensor>& grad_scale,
             const std::optional<at::Tensor>& found_inf) {
  static const auto float_lr = find_op<SgdSig<double>>(kSgd);
  static const auto tensor_lr = find_op<SgdSig<const at::Tensor&>>(kSgd, kTensorLr);
  const at::Device device = call.device;
  const std::optional<at::Tensor> scale = on_device(grad_scale, device);
  const std::optional<at::Tensor> inf = on_device(found_inf, device);
  // The GIL stays held: the dispatcher copies and drops references to every
  // tensor of the lists, and without the GIL each such drop acquires it.
  at::AutoGradMode no_grad(false);
  if (hyper.lr_tensor != nullptr) {
    tensor_lr.call(call.params, call.grads, call.buffers, call.first_step,
                   on_device(THPVariable_Unpack(hyper.lr_tensor), device), hyper.weight_decay, hyper.momentum,
                   hyper.dampening, hyper.nesterov, hyper.maximize, scale, inf);
  } else {
    float_lr.call(call.params, call.grads, call.buffers, call.first_step, hyper.lr,
                  hyper.weight_decay, hyper.momentum, hyper.dampening, hyper.nesterov, hyper.maximize, scale, inf);
  }
  // Only a step with new buffers needs to know (a host read of found_inf).
  return !(!call.new_buffers.empty() && inf.has_value() && inf->item<double>() != 0.0);
}

// Stores the new buffers of an applied step into `buffers` (a list).
void store_new_buffers(const SgdCall& call, PyObject* buffers) {
  for (size_t i = 0; i < call.slots.size(); ++i) {
    if (!call.first_step[i]) continue;
    PyObject* old = PyList_GET_ITEM(buffers, call.slots[i]);
    PyList_SET_ITEM(buffers, call.slots[i], THPVariable_Wrap(call.buffers[i]));
    Py_DECREF(old);
  }
}

// Reading hundreds of tensors from Python lists follows chains of dependent
// loads (each Python object, its TensorImpl; for a parameter's .grad also its
// autograd metadata and the gradient's TensorImpl) that between two steps are
// rarely still in cache: one miss after another, tensor after tensor.
// Prefetching each link a few tensors ahead of the next one overlaps the
// misses of several tensors instead.
class TensorChainPrefetcher {
 public:
  // `sequence`: a list or tuple (None entries are skipped); `through_grad`: also each tensor's .grad.
  TensorChainPrefetcher(PyObject* sequence, bool through_grad)
      : items_(PySequence_Fast_ITEMS(sequence)), count_(PySequence_Fast_GET_SIZE(sequence)),
        through_grad_(through_grad) {}

  // Call before reading item i.
  void before(Py_ssize_t i) const {
    if (i + 4 * kAhead < count_) __builtin_prefetch(items_[i + 4 * kAhead]);
    if (const c10::TensorImpl* impl = tensor_at(i + 3 * kAhead)) prefetch_lines(impl, sizeof(c10::TensorImpl));
    if (!through_grad_) return;
    if (const c10::TensorImpl* impl = tensor_at(i + 2 * kAhead)) {
      if (const void* meta = impl->autograd_meta()) prefetch_lines(meta, kAutogradMetaBytes);
    }
    if (const c10::TensorImpl* impl = tensor_at(i + kAhead)) {
      const at::Tensor& grad = impl->grad();
      if (grad.defined()) prefetch_lines(grad.unsafeGetTensorImpl(), sizeof(c10::TensorImpl));
    }
  }

 private:
  static constexpr Py_ssize_t kAhead = 3;
  static constexpr size_t kAutogradMetaBytes = 256;

  static void prefetch_lines(const void* p, size_t bytes) {
    for (size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(static_cast<const char*>(p) + offset);
  }

  const c10::TensorImpl* tensor_at(Py_ssize_t i) const {
    if (i >= count_ || !THPVariable_CheckExact(items_[i])) return nullptr;
    return THPVariable_Unpack(items_[i]).unsafeGetTensorImpl();
  }

  PyObject** items_;
  Py_ssize_t count_;
  bool through_grad_;
};

bool is_tensor_sequence(PyObject* obj) {
  if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
  PyObject** items = PySequence_Fast_ITEMS(obj);
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(obj); ++i) {
    if (!is_plain_tensor(items[i])) return false;
  }
  return true;
}

bool is_buffer_list(PyObject* obj, Py_ssize_t size) {
  if (!PyList_CheckExact(obj) || PyList_GET_SIZE(obj) != size) return false;
  for (Py_ssize_t i = 0; i < size; ++i) {
    if (!is_plain_optional_tensor(PyList_GET_ITEM(obj, i))) return false;
  }
  return true;
}

// sgd_(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening,
// nesterov, maximize, grad_scale, found_inf): lists (or tuples) of tensors,
// momentum_buffers a list whose None entries get the new buffers.
PyObject* sgd_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  SgdHyper hyper{};
  if (nargs != 11 || !no_function_mode() || !is_tensor_sequence(args[0]) || !is_tensor_sequence(args[1]) ||
      !read_hyper(args + 3, hyper) || !is_plain_optional_tensor(args[9]) || !is_plain_optional_tensor(args[10])) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(args[0]);
  const bool use_momentum = hyper.momentum != 0.0;
  if (count == 0 || PySequence_Fast_GET_SIZE(args[1]) != count || (use_momentum && !is_buffer_list(args[2], count))) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  SgdCall call(THPVariable_Unpack(PySequence_Fast_ITEMS(args[0])[0]).device(), static_cast<size_t>(count));
  PyObject** params = PySequence_Fast_ITEMS(args[0]);
  PyObject** grads = PySequence_Fast_ITEMS(args[1]);
  const TensorChainPrefetcher param_chains(args[0], false), grad_chains(args[1], false),
      buffer_chains(use_momentum ? args[2] : args[0], false);
  for (Py_ssize_t i = 0; i < count; ++i) {
    param_chains.before(i);
    grad_chains.before(i);
    if (use_momentum) buffer_chains.before(i);
    add_param(call, THPVariable_Unpack(params[i]), THPVariable_Unpack(grads[i]),
              use_momentum ? PyList_GET_ITEM(args[2], i) : Py_None, i, use_momentum);
  }
  if (run_sgd(call, hyper, optional_tensor(args[9]), optional_tensor(args[10]))) store_new_buffers(call, args[2]);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// One parameter group of the optimizer: (params, momentum_buffers, lr,
// weight_decay, momentum, dampening, nesterov, maximize); params a list of
// tensors, momentum_buffers a list aligned with it (None: no buffer yet).
struct GroupArgs {
  PyObject* params;
  PyObject* buffers;
  SgdHyper hyper;
};

bool read_group(PyObject* obj, GroupArgs& group) {
  if (!PyTuple_CheckExact(obj) || PyTuple_GET_SIZE(obj) != 8) return false;
  PyObject** items = PySequence_Fast_ITEMS(obj);
  group.params = items[0];
  group.buffers = items[1];
  if (!PyList_CheckExact(group.params) || !read_hyper(items + 2, group.hyper)) return false;
  const Py_ssize_t count = PyList_GET_SIZE(group.params);
  return group.hyper.momentum == 0.0 || is_buffer_list(group.buffers, count);
}

// optimizer_step_(groups, grad_scale, found_inf): the update of every
// parameter that has a .grad, one sgd_ call per group and device. Returns the
// (group, index) pairs whose buffers were created (and stored into the group's
// list), for the optimizer's state.
PyObject* optimizer_step_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 3 || !no_function_mode() || !PyList_CheckExact(args[0]) || !is_plain_optional_tensor(args[1]) ||
      !is_plain_optional_tensor(args[2])) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const Py_ssize_t group_count = PyList_GET_SIZE(args[0]);
  std::vector<GroupArgs> groups(static_cast<size_t>(group_count));
  // Per group, its calls per device (nearly always one).
  std::vector<std::vector<SgdCall>> calls(static_cast<size_t>(group_count));
  for (Py_ssize_t g = 0; g < group_count; ++g) {
    GroupArgs& group = groups[g];
    if (!read_group(PyList_GET_ITEM(args[0], g), group)) Py_RETURN_NOTIMPLEMENTED;
    const bool use_momentum = group.hyper.momentum != 0.0;
    const TensorChainPrefetcher param_chains(group.params, true),
        buffer_chains(use_momentum ? group.buffers : group.params, false);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(group.params); ++i) {
      param_chains.before(i);
      if (use_momentum) buffer_chains.before(i);
      PyObject* item = PyList_GET_ITEM(group.params, i);
      if (!is_plain_tensor(item)) Py_RETURN_NOTIMPLEMENTED;
      const at::Tensor& param = THPVariable_Unpack(item);
      // Not Tensor::grad: its leaf check only serves a warning about non-leaf tensors,
      // which add_param_group never lets into an optimizer.
      const at::Tensor& grad = param.unsafeGetTensorImpl()->grad();
      if (!grad.defined()) continue;  // torch.optim skips parameters without a gradient
      // Checked for every group before any is updated.
      TORCH_CHECK(grad.layout() == at::kStrided, "fused_linreg.optim.SGD does not support sparse gradients");
      // Nearly always one device: the previous parameter's call is checked first.
      std::vector<SgdCall>& device_calls = calls[g];
      const at::Device device = param.device();
      SgdCall* call = nullptr;
      if (!device_calls.empty() && device_calls.back().device == device) {
        call = &device_calls.back();
      } else {
        auto found = std::find_if(device_calls.begin(), device_calls.end(),
                                  [&](const SgdCall& c) { return c.device == device; });
        call = found != device_calls.end()
                   ? &*found
                   : &device_calls.emplace_back(device, static_cast<size_t>(PyList_GET_SIZE(group.params)));
      }
      add_param(*call, param, grad, use_momentum ? PyList_GET_ITEM(group.buffers, i) : Py_None, i, use_momentum);
    }
  }
  const std::optional<at::Tensor> grad_scale = optional_tensor(args[1]);
  const std::optional<at::Tensor> found_inf = optional_tensor(args[2]);
  PyObject* created = PyList_New(0);
  if (created == nullptr) return nullptr;
  for (Py_ssize_t g = 0; g < group_count; ++g) {
    for (const SgdCall& call : calls[g]) {
      if (!run_sgd(call, groups[g].hyper, grad_scale, found_inf)) continue;
      store_new_buffers(call, groups[g].buffers);
      for (size_t i = 0; i < call.slots.size(); ++i) {
        if (!call.first_step[i]) continue;
        PyObject* pair = Py_BuildValue("(nn)", g, call.slots[i]);
        if (pair == nullptr || PyList_Append(created, pair) != 0) {
          Py_XDECREF(pair);
          Py_DECREF(created);
          return nullptr;
        }
        Py_DECREF(pair);
      }
    }
  }
  return created;
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&linear_entry)), METH_FASTCALL,
     "linear(x, weight, bias): the op for a 2-D weight and an exact bias; else NotImplemented."},
    {"squared_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&loss_entry<&kSquaredLoss, false>)),
     METH_FASTCALL, "squared_loss(input, target, reduction): the op for one dtype; else NotImplemented."},
    {"mse_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&loss_entry<&kMseLoss, true>)),
     METH_FASTCALL, "mse_loss(input, target, reduction): the op for one dtype and shape; else NotImplemented."},
    {"sgd_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&sgd_entry)), METH_FASTCALL,
     "sgd_(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize, "
     "grad_scale, found_inf)."},
    {"optimizer_step_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&optimizer_step_entry)),
     METH_FASTCALL, "optimizer_step_(groups, grad_scale, found_inf): fused_linreg.optim.SGD's update."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMethodDef* python_methods() { return methods; }

}  // namespace fused_linreg
