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
#include <torch/csrc/utils/object_ptr.h>

#include <ATen/ops/empty_like.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <utility>
#include <vector>

#include "checks.h"
#include "op_handles.h"
#include "pointer_map.h"
#include "shuffle.h"
#include "torch_internals.h"

namespace fused_linreg {
namespace {

// A tensor that the op may receive directly: a dense Tensor or Parameter (a
// subclass may override __torch_function__). Every entry also checks, once,
// that no torch function mode is active (no_function_mode).
bool is_plain_tensor(PyObject* obj) {
  return is_exact_tensor_object(obj) && tensor_of(obj).layout() == at::kStrided;
}

bool no_function_mode() { return !torch_function_mode_active(); }

bool is_plain_optional_tensor(PyObject* obj) { return obj == Py_None || is_plain_tensor(obj); }

std::optional<at::Tensor> optional_tensor(PyObject* obj) {
  if (obj == Py_None) return std::nullopt;
  return tensor_of(obj);
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
  const at::Tensor& weight = tensor_of(args[1]);
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
    out = op.call(tensor_of(args[0]), weight, bias);
  }
  return tensor_object(std::move(out));
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
  const at::Tensor& input = tensor_of(args[0]);
  const at::Tensor& target = tensor_of(args[1]);
  if (input.scalar_type() != target.scalar_type() || (kSameShape && input.sizes() != target.sizes())) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  static const auto op = find_op<LossSig>(*Name);
  at::Tensor out;
  {
    GilRelease no_gil;
    out = op.call(input, target, reduction);
  }
  return tensor_object(std::move(out));
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

// The tensors of one sgd_ call (one device). buffer_objects[i] is the caller's
// momentum buffer of params[i] (None: no buffer yet); prepare_buffers turns
// them into the op's buffers, new ones (held in new_buffers) for first steps.
struct SgdCall {
  SgdCall(at::Device device, size_t capacity) : device(device) {
    params.reserve(capacity);
    grads.reserve(capacity);
    param_objects.reserve(capacity);
    buffer_objects.reserve(capacity);
  }

  at::Device device;
  BorrowedTensors params;
  BorrowedTensors grads;
  std::vector<PyObject*> param_objects;   // borrowed
  std::vector<PyObject*> buffer_objects;  // borrowed
  BorrowedTensors buffers;
  c10::List<bool> first_step;
  std::vector<at::Tensor> new_buffers;  // owned here; buffers borrows them
};

void add_param(SgdCall& call, PyObject* param_object, const at::Tensor& param, const at::Tensor& grad,
               PyObject* buffer) {
  call.params.push_back(param);
  call.grads.push_back(grad);
  call.param_objects.push_back(param_object);
  call.buffer_objects.push_back(buffer);
}

// With momentum: the op's buffer list and first-step flags from buffer_objects.
void prepare_buffers(SgdCall& call) {
  const size_t count = call.buffer_objects.size();
  call.buffers.reserve(count);
  call.first_step.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const bool first = call.buffer_objects[i] == Py_None;
    if (first) {
      // The kernel never reads a first-step buffer (it sets buf = g): empty is enough.
      call.new_buffers.push_back(at::empty_like(call.params[i]));
      call.buffers.push_back(call.new_buffers.back());
    } else {
      call.buffers.push_back(tensor_of(call.buffer_objects[i]));
    }
    call.first_step.push_back(first);
  }
}

at::Tensor on_device(const at::Tensor& t, const at::Device& device) {
  // A copy to the host must be synchronous: the kernel may read found_inf there.
  return t.device() == device ? t : t.to(device, /*non_blocking=*/!device.is_cpu());
}

std::optional<at::Tensor> on_device(const std::optional<at::Tensor>& t, const at::Device& device) {
  if (!t.has_value()) return std::nullopt;
  return on_device(*t, device);
}

std::optional<at::Tensor> lr_tensor_on(const SgdHyper& hyper, const at::Device& device) {
  if (hyper.lr_tensor == nullptr) return std::nullopt;
  return on_device(tensor_of(hyper.lr_tensor), device);
}

// Every check sgd_ would make on `call`, without running it.
void check_call(const SgdCall& call, const SgdHyper& hyper, const std::optional<at::Tensor>& grad_scale,
                const std::optional<at::Tensor>& found_inf) {
  const SgdOptions opt{hyper.weight_decay, hyper.momentum, hyper.dampening, hyper.nesterov, hyper.maximize};
  check_sgd_call(call.params, call.grads, call.buffers, call.first_step, hyper.lr, lr_tensor_on(hyper, call.device),
                 opt, on_device(grad_scale, call.device), on_device(found_inf, call.device));
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
    tensor_lr.call(call.params, call.grads, call.buffers, call.first_step, *lr_tensor_on(hyper, device),
                   hyper.weight_decay, hyper.momentum, hyper.dampening, hyper.nesterov, hyper.maximize, scale, inf);
  } else {
    float_lr.call(call.params, call.grads, call.buffers, call.first_step, hyper.lr,
                  hyper.weight_decay, hyper.momentum, hyper.dampening, hyper.nesterov, hyper.maximize, scale, inf);
  }
  // Only a step with new buffers needs to know (a host read of found_inf).
  return !(!call.new_buffers.empty() && inf.has_value() && inf->item<double>() != 0.0);
}

// Stores the new buffers of an applied step into `buffers` (a list aligned with call.params).
void store_new_buffers(const SgdCall& call, PyObject* buffers) {
  for (size_t i = 0; i < call.buffer_objects.size(); ++i) {
    if (!call.first_step[i]) continue;
    PyObject* old = PyList_GET_ITEM(buffers, i);
    PyList_SET_ITEM(buffers, i, tensor_object(call.buffers[i]));
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
    if (const at::Tensor* t = tensor_at(i + 3 * kAhead)) prefetch_lines(impl_address(*t), kTensorImplBytes);
    if (!through_grad_) return;
    if (const at::Tensor* t = tensor_at(i + 2 * kAhead)) {
      if (const void* meta = autograd_meta_address(*t)) prefetch_lines(meta, kAutogradMetaBytes);
    }
    if (const at::Tensor* t = tensor_at(i + kAhead)) {
      const at::Tensor& grad = grad_of(*t);
      if (grad.defined()) prefetch_lines(impl_address(grad), kTensorImplBytes);
    }
  }

 private:
  static constexpr Py_ssize_t kAhead = 3;
  static constexpr size_t kAutogradMetaBytes = 256;

  static void prefetch_lines(const void* p, size_t bytes) {
    for (size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(static_cast<const char*>(p) + offset);
  }

  const at::Tensor* tensor_at(Py_ssize_t i) const {
    if (i >= count_ || !is_exact_tensor_object(items_[i])) return nullptr;
    return &tensor_of(items_[i]);
  }

  PyObject** items_;
  Py_ssize_t count_;
  bool through_grad_;
};

// Any dense tensor, subclasses included: for checks only (check_sgd_).
bool is_dense_tensor(PyObject* obj) {
  return is_tensor_object(obj) && tensor_of(obj).layout() == at::kStrided;
}

template <bool (*IsTensor)(PyObject*)>
bool is_tensor_sequence(PyObject* obj) {
  if (!PyList_CheckExact(obj) && !PyTuple_CheckExact(obj)) return false;
  PyObject** items = PySequence_Fast_ITEMS(obj);
  for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(obj); ++i) {
    if (!IsTensor(items[i])) return false;
  }
  return true;
}

template <bool (*IsTensor)(PyObject*)>
bool is_buffer_list(PyObject* obj, Py_ssize_t size) {
  if (!PyList_CheckExact(obj) || PyList_GET_SIZE(obj) != size) return false;
  for (Py_ssize_t i = 0; i < size; ++i) {
    PyObject* item = PyList_GET_ITEM(obj, i);
    if (item != Py_None && !IsTensor(item)) return false;
  }
  return true;
}

// sgd_'s arguments (params, grads, momentum_buffers, lr, weight_decay, momentum,
// dampening, nesterov, maximize, grad_scale, found_inf): lists (or tuples) of
// tensors, momentum_buffers a list whose None entries get new buffers. Fills
// `call` and `hyper`; false for anything else.
template <bool (*IsTensor)(PyObject*)>
bool read_sgd_args(PyObject* const* args, Py_ssize_t nargs, std::optional<SgdCall>& call, SgdHyper& hyper) {
  if (nargs != 11 || !is_tensor_sequence<IsTensor>(args[0]) || !is_tensor_sequence<IsTensor>(args[1]) ||
      !read_hyper(args + 3, hyper) || !is_plain_optional_tensor(args[9]) || !is_plain_optional_tensor(args[10])) {
    return false;
  }
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(args[0]);
  const bool use_momentum = hyper.momentum != 0.0;
  if (count == 0 || PySequence_Fast_GET_SIZE(args[1]) != count ||
      (use_momentum && !is_buffer_list<IsTensor>(args[2], count))) {
    return false;
  }
  PyObject** params = PySequence_Fast_ITEMS(args[0]);
  PyObject** grads = PySequence_Fast_ITEMS(args[1]);
  call.emplace(tensor_of(params[0]).device(), static_cast<size_t>(count));
  const TensorChainPrefetcher param_chains(args[0], false), grad_chains(args[1], false),
      buffer_chains(use_momentum ? args[2] : args[0], false);
  for (Py_ssize_t i = 0; i < count; ++i) {
    param_chains.before(i);
    grad_chains.before(i);
    if (use_momentum) buffer_chains.before(i);
    add_param(*call, params[i], tensor_of(params[i]), tensor_of(grads[i]),
              use_momentum ? PyList_GET_ITEM(args[2], i) : Py_None);
  }
  if (use_momentum) prepare_buffers(*call);
  return true;
}

// sgd_(params, grads, momentum_buffers, ...): see read_sgd_args.
PyObject* sgd_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  std::optional<SgdCall> call;
  SgdHyper hyper{};
  if (!no_function_mode() || !read_sgd_args<is_plain_tensor>(args, nargs, call, hyper)) Py_RETURN_NOTIMPLEMENTED;
  if (run_sgd(*call, hyper, optional_tensor(args[9]), optional_tensor(args[10])) && hyper.momentum != 0.0) {
    store_new_buffers(*call, args[2]);
  }
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// check_sgd_(the arguments of sgd_): raises what sgd_ would raise before it
// writes, and writes nothing; NotImplemented for arguments it cannot read. The
// optimizer's general path checks every group with it before it updates any.
PyObject* check_sgd_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  std::optional<SgdCall> call;
  SgdHyper hyper{};
  if (!read_sgd_args<is_dense_tensor>(args, nargs, call, hyper)) Py_RETURN_NOTIMPLEMENTED;
  check_call(*call, hyper, optional_tensor(args[9]), optional_tensor(args[10]));
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// One parameter group of the optimizer: (params, lr, weight_decay, momentum,
// dampening, nesterov, maximize), params a list of tensors.
struct GroupArgs {
  PyObject* params;
  SgdHyper hyper;
};

bool read_group(PyObject* obj, GroupArgs& group) {
  if (!PyTuple_CheckExact(obj) || PyTuple_GET_SIZE(obj) != 7) return false;
  PyObject** items = PySequence_Fast_ITEMS(obj);
  group.params = items[0];
  return PyList_CheckExact(group.params) && read_hyper(items + 1, group.hyper);
}

// Where a parameter sits: calls[group][call].params[position].
struct ParamSlot {
  size_t group;
  size_t call;
  size_t position;
};

// Reads each parameter's momentum buffer from the optimizer's state as
// torch.optim.SGD does (state[p].get("momentum_buffer"); None or no entry: a
// first step). The state is walked, not looked up parameter by parameter:
// hashing a tensor calls Tensor.__hash__ in Python, while a dict lookup matches
// a tensor key by identity anyway. False for a state the general path must read.
bool read_momentum_buffers(PyObject* state, const PointerMap<ParamSlot>& slots,
                           std::vector<std::vector<SgdCall>>& calls) {
  static PyObject* const kMomentumBuffer = PyUnicode_InternFromString("momentum_buffer");
  if (!PyDict_Check(state)) return false;
  Py_ssize_t pos = 0;
  PyObject* key = nullptr;
  PyObject* param_state = nullptr;
  while (PyDict_Next(state, &pos, &key, &param_state)) {
    const ParamSlot* slot = slots.find(key);
    if (slot == nullptr) continue;
    if (!PyDict_Check(param_state)) return false;
    PyObject* buffer = PyDict_GetItemWithError(param_state, kMomentumBuffer);
    if (buffer == nullptr) {
      if (PyErr_Occurred()) throw python_error();
      continue;
    }
    if (!is_plain_optional_tensor(buffer)) return false;
    calls[slot->group][slot->call].buffer_objects[slot->position] = buffer;
  }
  return true;
}

// optimizer_step_(groups, state, grad_scale, found_inf): fused_linreg.optim.SGD's
// update of every parameter that has a .grad, one sgd_ call per group and
// device, each parameter's momentum buffer read from `state` (the optimizer's
// state, the only record of them). Every call is checked before any runs.
// Returns the (param, buffer) pairs of the buffers created, for the state.
PyObject* optimizer_step_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 || !no_function_mode() || !PyList_CheckExact(args[0]) || !is_plain_optional_tensor(args[2]) ||
      !is_plain_optional_tensor(args[3])) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const Py_ssize_t group_count = PyList_GET_SIZE(args[0]);
  std::vector<GroupArgs> groups(static_cast<size_t>(group_count));
  size_t param_count = 0;
  for (Py_ssize_t g = 0; g < group_count; ++g) {
    if (!read_group(PyList_GET_ITEM(args[0], g), groups[g])) Py_RETURN_NOTIMPLEMENTED;
    param_count += static_cast<size_t>(PyList_GET_SIZE(groups[g].params));
  }
  // Per group, its calls per device (nearly always one).
  std::vector<std::vector<SgdCall>> calls(static_cast<size_t>(group_count));
  PointerMap<ParamSlot> momentum_slots(param_count);
  for (Py_ssize_t g = 0; g < group_count; ++g) {
    const GroupArgs& group = groups[g];
    const bool use_momentum = group.hyper.momentum != 0.0;
    const TensorChainPrefetcher param_chains(group.params, true);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(group.params); ++i) {
      param_chains.before(i);
      PyObject* item = PyList_GET_ITEM(group.params, i);
      if (!is_plain_tensor(item)) Py_RETURN_NOTIMPLEMENTED;
      const at::Tensor& param = tensor_of(item);
      const at::Tensor& grad = grad_of(param);
      if (!grad.defined()) continue;  // torch.optim skips parameters without a gradient
      TORCH_CHECK(grad.layout() == at::kStrided, "fused_linreg.optim.SGD does not support sparse gradients");
      // Nearly always one device: the previous parameter's call is checked first.
      std::vector<SgdCall>& device_calls = calls[g];
      const at::Device device = param.device();
      auto call = device_calls.end();
      if (!device_calls.empty() && device_calls.back().device == device) {
        call = device_calls.end() - 1;
      } else {
        call = std::find_if(device_calls.begin(), device_calls.end(),
                            [&](const SgdCall& c) { return c.device == device; });
        if (call == device_calls.end()) {
          device_calls.emplace_back(device, static_cast<size_t>(PyList_GET_SIZE(group.params)));
          call = device_calls.end() - 1;
        }
      }
      if (use_momentum) {
        // A parameter listed twice keeps None here; sgd_ then raises on the overlap.
        momentum_slots.insert(item, {static_cast<size_t>(g), static_cast<size_t>(call - device_calls.begin()),
                                     call->param_objects.size()});
      }
      add_param(*call, item, param, grad, Py_None);
    }
  }
  const bool any_momentum = std::any_of(groups.begin(), groups.end(),
                                        [](const GroupArgs& group) { return group.hyper.momentum != 0.0; });
  if (any_momentum && !read_momentum_buffers(args[1], momentum_slots, calls)) Py_RETURN_NOTIMPLEMENTED;
  const std::optional<at::Tensor> grad_scale = optional_tensor(args[2]);
  const std::optional<at::Tensor> found_inf = optional_tensor(args[3]);
  // All or nothing: the first call checks itself before it writes, the others are checked before it.
  bool first_call = true;
  for (size_t g = 0; g < calls.size(); ++g) {
    for (SgdCall& call : calls[g]) {
      if (groups[g].hyper.momentum != 0.0) prepare_buffers(call);
      if (!first_call) check_call(call, groups[g].hyper, grad_scale, found_inf);
      first_call = false;
    }
  }
  THPObjectPtr created(PyList_New(0));
  if (!created) return nullptr;
  for (size_t g = 0; g < calls.size(); ++g) {
    for (const SgdCall& call : calls[g]) {
      if (!run_sgd(call, groups[g].hyper, grad_scale, found_inf)) continue;
      for (size_t i = 0; i < call.first_step.size(); ++i) {
        if (!call.first_step[i]) continue;
        THPObjectPtr buffer(tensor_object(call.buffers[i]));
        THPObjectPtr pair(buffer ? PyTuple_Pack(2, call.param_objects[i], buffer.get()) : nullptr);
        if (!pair || PyList_Append(created.get(), pair.get()) != 0) return nullptr;
      }
    }
  }
  return created.release();
  END_HANDLE_TH_ERRORS
}

// ---------------------------------------------------------------------------
// linreg_grad, linreg_step_ and linreg_epoch_ (fused_step.py's wrappers).
// ---------------------------------------------------------------------------

// A 2-D X and a y and weight the op gets as they are; bias a tensor or None.
bool read_linreg_tensors(PyObject* const* args) {
  return no_function_mode() && is_plain_tensor(args[0]) && is_plain_tensor(args[1]) && is_plain_tensor(args[2]) &&
         is_plain_optional_tensor(args[3]) && tensor_of(args[0]).dim() == 2;
}

// The momentum buffers of a step or epoch, read from the caller's state dict
// as fused_step.py's _momentum_buffers reads them: new (uninitialised) ones on
// the first step, which keep_new_buffers then stores.
struct MomentumState {
  std::optional<at::Tensor> weight_buffer;
  std::optional<at::Tensor> bias_buffer;
  bool is_first_step = false;
};

PyObject* weight_buffer_key() {
  static PyObject* const key = PyUnicode_InternFromString("weight_momentum_buffer");
  return key;
}

PyObject* bias_buffer_key() {
  static PyObject* const key = PyUnicode_InternFromString("bias_momentum_buffer");
  return key;
}

PyObject* dict_item(PyObject* dict, PyObject* key) {
  PyObject* item = PyDict_GetItemWithError(dict, key);
  if (item == nullptr && PyErr_Occurred()) throw python_error();
  return item;
}

// False where the general path must decide: a state that is neither None nor a
// dict, an invalid momentum (its error), a missing state (its error), a bias
// that joins after the first step, buffers that are not plain tensors.
bool read_momentum_state(PyObject* state, double momentum, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, MomentumState& out) {
  if (state != Py_None && !PyDict_CheckExact(state)) return false;
  if (momentum == 0.0) return true;
  if (!(momentum > 0.0 && std::isfinite(momentum)) || state == Py_None) return false;
  PyObject* weight_buffer = dict_item(state, weight_buffer_key());
  if (weight_buffer == nullptr) {
    // The kernel sets buf = grad on a first step without reading it.
    out.weight_buffer = at::empty_like(weight);
    if (bias.has_value()) out.bias_buffer = at::empty_like(*bias);
    out.is_first_step = true;
    return true;
  }
  PyObject* bias_buffer = dict_item(state, bias_buffer_key());
  if ((bias.has_value() && bias_buffer == nullptr) || !is_plain_tensor(weight_buffer) ||
      (bias_buffer != nullptr && !is_plain_tensor(bias_buffer))) {
    return false;
  }
  out.weight_buffer = tensor_of(weight_buffer);
  if (bias_buffer != nullptr) out.bias_buffer = tensor_of(bias_buffer);
  return true;
}

// After a successful first step: the new buffers go into the state dict.
void keep_new_buffers(PyObject* state, const MomentumState& momentum) {
  if (!momentum.is_first_step) return;
  const auto store = [&](PyObject* key, const at::Tensor& buffer) {
    THPObjectPtr object(tensor_object(buffer));
    if (!object || PyDict_SetItem(state, key, object.get()) != 0) throw python_error();
  };
  store(weight_buffer_key(), *momentum.weight_buffer);
  if (momentum.bias_buffer.has_value()) store(bias_buffer_key(), *momentum.bias_buffer);
}

// linreg_grad(X, y, weight, bias) -> (loss, grad_weight, grad_bias or None).
PyObject* linreg_grad_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 || !read_linreg_tensors(args)) Py_RETURN_NOTIMPLEMENTED;
  static const auto op = find_op<LinregGradSig>(kLinregGrad);
  const std::optional<at::Tensor> bias = optional_tensor(args[3]);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> grads;
  {
    const at::AutoGradMode no_grad(false);
    GilRelease no_gil;
    grads = op.call(tensor_of(args[0]), tensor_of(args[1]), tensor_of(args[2]), bias);
  }
  THPObjectPtr loss(tensor_object(std::move(std::get<0>(grads))));
  THPObjectPtr grad_weight(tensor_object(std::move(std::get<1>(grads))));
  THPObjectPtr grad_bias(bias.has_value() ? tensor_object(std::move(std::get<2>(grads))) : Py_NewRef(Py_None));
  if (!loss || !grad_weight || !grad_bias) return nullptr;
  return PyTuple_Pack(3, loss.get(), grad_weight.get(), grad_bias.get());
  END_HANDLE_TH_ERRORS
}

// The SGD hyperparameters of a step or epoch: lr, weight_decay, momentum,
// dampening, nesterov, maximize.
bool read_step_hyper(PyObject* const* args, SgdHyper& hyper) {
  return !is_plain_tensor(args[0]) && read_hyper(args, hyper);
}

// Below this many elements of X a fused step or epoch keeps the GIL: letting it
// go and taking it back (also for each reference to a Python tensor dropped
// meanwhile) cost 0.5 us of the book's 11 us epoch; larger calls run long
// enough for other Python threads to make use of it.
constexpr int64_t kGilReleaseElements = int64_t{1} << 16;

// Runs an in-place fused op, `call(weight, bias, momentum)`, with the momentum
// buffers of `state` (args: X, y, weight, bias, ...), under no_grad (and,
// for a large X, without the GIL); keeps the new buffers of a first step in `state` once the
// op succeeded (fused_step.py's _with_momentum_state).
template <typename Call>
PyObject* call_with_momentum_state(PyObject* const* args, PyObject* state, double momentum_factor, Call&& call) {
  const at::Tensor& weight = tensor_of(args[2]);
  const std::optional<at::Tensor> bias = optional_tensor(args[3]);
  MomentumState momentum;
  if (!read_momentum_state(state, momentum_factor, weight, bias, momentum)) Py_RETURN_NOTIMPLEMENTED;
  at::Tensor result;
  {
    const at::AutoGradMode no_grad(false);
    std::optional<GilRelease> no_gil;
    if (tensor_of(args[0]).numel() >= kGilReleaseElements) no_gil.emplace();
    result = call(weight, bias, momentum);
  }
  keep_new_buffers(state, momentum);
  return tensor_object(std::move(result));
}

// linreg_step_(X, y, weight, bias, lr, weight_decay, momentum, dampening,
// nesterov, maximize, state) -> loss.
PyObject* linreg_step_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  SgdHyper hyper{};
  if (nargs != 11 || !read_linreg_tensors(args) || !read_step_hyper(args + 4, hyper)) Py_RETURN_NOTIMPLEMENTED;
  static const auto op = find_op<LinregStepSig>(kLinregStep);
  return call_with_momentum_state(args, args[10], hyper.momentum, [&](const at::Tensor& weight,
                                                                      const std::optional<at::Tensor>& bias,
                                                                      const MomentumState& momentum) {
    return op.call(tensor_of(args[0]), tensor_of(args[1]), weight, bias, momentum.weight_buffer, momentum.bias_buffer,
                   momentum.is_first_step, hyper.lr, hyper.weight_decay, hyper.momentum, hyper.dampening,
                   hyper.nesterov, hyper.maximize);
  });
  END_HANDLE_TH_ERRORS
}

// linreg_epoch_(X, y, weight, bias, indices, generator, batch_size, lr,
// weight_decay, momentum, dampening, nesterov, maximize, state) -> losses.
PyObject* linreg_epoch_entry(PyObject* /*module*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  SgdHyper hyper{};
  if (nargs != 14 || !read_linreg_tensors(args) || !is_plain_optional_tensor(args[4]) ||
      (args[5] != Py_None && !is_generator_object(args[5])) || !PyLong_CheckExact(args[6]) ||
      !read_step_hyper(args + 7, hyper)) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const int64_t batch_size = PyLong_AsLongLong(args[6]);
  if (batch_size == -1 && PyErr_Occurred()) {  // beyond int64: the op's own error, from the general path
    PyErr_Clear();
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& X = tensor_of(args[0]);
  std::optional<at::Generator> generator;
  if (args[5] != Py_None) {
    generator = generator_of(args[5]);
    if (generator->device() != X.device()) Py_RETURN_NOTIMPLEMENTED;  // drawn on its own device there
  }
  static const auto op = find_op<LinregEpochSig>(kLinregEpoch);
  return call_with_momentum_state(args, args[13], hyper.momentum, [&](const at::Tensor& weight,
                                                                      const std::optional<at::Tensor>& bias,
                                                                      const MomentumState& momentum) {
    // The default rows: the general path's torch.randperm(n, generator=generator), from the same stream.
    const at::Tensor rows =
        args[4] != Py_None ? tensor_of(args[4]) : random_permutation(X.size(0), generator, X.device());
    return op.call(X, tensor_of(args[1]), rows, batch_size, weight, bias, momentum.weight_buffer, momentum.bias_buffer,
                   momentum.is_first_step, hyper.lr, hyper.weight_decay, hyper.momentum, hyper.dampening,
                   hyper.nesterov, hyper.maximize);
  });
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&linear_entry)), METH_FASTCALL,
     "linear(x, weight, bias): the op for a 2-D weight and an exact bias; else NotImplemented."},
    {"squared_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&loss_entry<&kSquaredLoss, false>)),
     METH_FASTCALL, "squared_loss(input, target, reduction): the op for one dtype; else NotImplemented."},
    {"mse_loss", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&loss_entry<&kMseLoss, true>)),
     METH_FASTCALL, "mse_loss(input, target, reduction): the op for one dtype and shape; else NotImplemented."},
    {"linreg_grad", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&linreg_grad_entry)), METH_FASTCALL,
     "linreg_grad(X, y, weight, bias): the op for plain tensors; else NotImplemented."},
    {"linreg_step_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&linreg_step_entry)), METH_FASTCALL,
     "linreg_step_(X, y, weight, bias, lr, weight_decay, momentum, dampening, nesterov, maximize, state)."},
    {"linreg_epoch_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&linreg_epoch_entry)),
     METH_FASTCALL,
     "linreg_epoch_(X, y, weight, bias, indices, generator, batch_size, lr, weight_decay, momentum, dampening, "
     "nesterov, maximize, state)."},
    {"sgd_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&sgd_entry)), METH_FASTCALL,
     "sgd_(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize, "
     "grad_scale, found_inf)."},
    {"check_sgd_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&check_sgd_entry)), METH_FASTCALL,
     "check_sgd_(the arguments of sgd_): sgd_'s checks, without the update."},
    {"optimizer_step_", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&optimizer_step_entry)),
     METH_FASTCALL, "optimizer_step_(groups, state, grad_scale, found_inf): fused_linreg.optim.SGD's update."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

PyMethodDef* python_methods() { return methods; }

}  // namespace fused_linreg
