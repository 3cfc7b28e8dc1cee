// Argument validation shared by the CPU and CUDA kernels, so both devices raise
// the same errors, always before anything is written. Messages name the op and
// the argument: "fused_linreg.<op>: <argument> ...".
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/List.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fused_linreg {

inline void check_float_tensor(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.defined(), "fused_linreg.", op, ": ", arg, " is undefined");
  TORCH_CHECK(t.layout() == at::kStrided, "fused_linreg.", op, ": ", arg,
              " must be a dense (strided) tensor, got layout ", t.layout());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "fused_linreg.", op, ": ", arg,
              " must be float64, float32, float16 or bfloat16, got ", t.scalar_type());
}

inline void check_same_dtype_device(const at::Tensor& t, const at::Tensor& ref, const char* op,
                                    const char* arg, const char* ref_arg) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "fused_linreg.", op, ": ", arg, " has dtype ",
              t.scalar_type(), " but ", ref_arg, " has dtype ", ref.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "fused_linreg.", op, ": ", arg, " is on ", t.device(),
              " but ", ref_arg, " is on ", ref.device());
}

// linear: x (..., in), weight (out, in), bias (out).
inline void check_linear_args(const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear";
  check_float_tensor(x, op, "x");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(weight, x, op, "weight", "x");
  TORCH_CHECK(x.dim() >= 1, "fused_linreg.linear: x must have at least 1 dimension, got a 0-dim tensor");
  TORCH_CHECK(weight.dim() == 2, "fused_linreg.linear: weight must be 2-D (out_features, in_features), got shape ",
              weight.sizes());
  TORCH_CHECK(x.size(-1) == weight.size(1), "fused_linreg.linear: x has ", x.size(-1),
              " features in its last dimension (shape ", x.sizes(), ") but weight expects ", weight.size(1),
              " (shape ", weight.sizes(), ")");
  if (bias.has_value() && bias->defined()) {
    check_float_tensor(*bias, op, "bias");
    check_same_dtype_device(*bias, x, op, "bias", "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "fused_linreg.linear: bias must have shape (", weight.size(0), ",), got ", bias->sizes());
  }
}

inline void check_linear_backward_input_args(const at::Tensor& grad_out, const at::Tensor& weight) {
  constexpr const char* op = "linear_backward_input";
  check_float_tensor(grad_out, op, "grad_out");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(weight, grad_out, op, "weight", "grad_out");
  TORCH_CHECK(weight.dim() == 2, "fused_linreg.linear_backward_input: weight must be 2-D, got shape ",
              weight.sizes());
  TORCH_CHECK(grad_out.dim() >= 1 && grad_out.size(-1) == weight.size(0),
              "fused_linreg.linear_backward_input: grad_out must have shape (..., ", weight.size(0), "), got ",
              grad_out.sizes());
}

inline void check_linear_backward_params_args(const at::Tensor& grad_out, const at::Tensor& x) {
  constexpr const char* op = "linear_backward_params";
  check_float_tensor(grad_out, op, "grad_out");
  check_float_tensor(x, op, "x");
  check_same_dtype_device(x, grad_out, op, "x", "grad_out");
  TORCH_CHECK(x.dim() >= 1 && grad_out.dim() == x.dim() && grad_out.sizes().slice(0, x.dim() - 1) ==
                                                               x.sizes().slice(0, x.dim() - 1),
              "fused_linreg.linear_backward_params: grad_out (shape ", grad_out.sizes(),
              ") and x (shape ", x.sizes(), ") must share their leading dimensions");
}

enum class Reduction { None, Sum, Mean };

inline Reduction parse_reduction(std::string_view reduction, const char* op) {
  if (reduction == "none") return Reduction::None;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "mean") return Reduction::Mean;
  TORCH_CHECK(false, "fused_linreg.", op, ": reduction must be 'none', 'sum' or 'mean', got '", reduction, "'");
}

// squared_loss accepts any target with input's element count (the book reshapes
// it); mse_loss wants identical shapes (its Python wrapper broadcasts first).
inline void check_loss_args(const at::Tensor& input, const at::Tensor& target, const char* op,
                            bool same_shape) {
  check_float_tensor(input, op, "input");
  check_float_tensor(target, op, "target");
  check_same_dtype_device(target, input, op, "target", "input");
  if (same_shape) {
    TORCH_CHECK(input.sizes() == target.sizes(), "fused_linreg.", op, ": target has shape ", target.sizes(),
                " but input has shape ", input.sizes());
  } else {
    TORCH_CHECK(input.numel() == target.numel(), "fused_linreg.", op, ": target has ", target.numel(),
                " elements (shape ", target.sizes(), ") but input has ", input.numel(), " (shape ",
                input.sizes(), ")");
  }
}

inline void check_loss_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& target, Reduction reduction, const char* op,
                                     bool same_shape) {
  check_loss_args(input, target, op, same_shape);
  check_float_tensor(grad_output, op, "grad_output");
  check_same_dtype_device(grad_output, input, op, "grad_output", "input");
  if (reduction == Reduction::None) {
    TORCH_CHECK(grad_output.sizes() == input.sizes(), "fused_linreg.", op, ": grad_output has shape ",
                grad_output.sizes(), " but input has shape ", input.sizes());
  } else {
    TORCH_CHECK(grad_output.numel() == 1, "fused_linreg.", op,
                ": grad_output must have one element for a sum or mean reduction, got shape ",
                grad_output.sizes());
  }
}

// One tensor argument for check_no_overlap: its name as messages print it ("X",
// or "params" with index 2 for "params[2]") and whether the op writes it.
struct OverlapArg {
  const at::Tensor* tensor;
  const char* name;
  int64_t index;  // -1 for an argument that is not a list entry
  bool written;
};

inline std::string overlap_arg_name(const OverlapArg& arg) {
  return arg.index < 0 ? std::string(arg.name) : std::string(arg.name) + "[" + std::to_string(arg.index) + "]";
}

// The storages of a set of tensors, to tell whether any two share one: if none
// does, no two tensors overlap, by torch's own rule (at::get_overlap_status
// finds overlap only within one storage). Open addressing: the common case of
// optimizer lists (every tensor its own allocation) costs O(n), no sort.
class StorageSet {
 public:
  explicit StorageSet(size_t expected) {
    size_t capacity = 16;
    while (capacity < 2 * expected) capacity *= 2;
    slots_.assign(capacity, nullptr);
  }

  // Adds t's storage; false if it was there already (or t has none to compare).
  bool insert(const at::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return true;
    if (!t.has_storage() || 2 * ++size_ > slots_.size()) return false;
    const void* storage = t.unsafeGetTensorImpl()->unsafe_storage().unsafeGetStorageImpl();
    // Fibonacci hashing: allocations are aligned, the low bits of an address say little.
    size_t slot = static_cast<size_t>((reinterpret_cast<uintptr_t>(storage) * 0x9E3779B97F4A7C15ull) >> 32);
    for (;; ++slot) {
      slot &= slots_.size() - 1;
      if (slots_[slot] == nullptr) break;
      if (slots_[slot] == storage) return false;
    }
    slots_[slot] = storage;
    return true;
  }

 private:
  std::vector<const void*> slots_;
  size_t size_ = 0;
};

// A tensor written in place must not have elements that share memory: an
// expanded (stride-0) tensor would be written through a contiguous temporary
// whose copy back fails, after the other updates are done.
inline void check_no_internal_overlap(const OverlapArg& arg, const char* op) {
  const at::Tensor& t = *arg.tensor;
  TORCH_CHECK(!t.defined() || t.numel() == 0 || at::has_internal_overlap(t) != at::MemOverlap::Yes, "fused_linreg.",
              op, ": ", overlap_arg_name(arg),
              " has elements that share memory (e.g. an expanded tensor) and cannot be written in place");
}

// The in-place ops write their tensors chunk by chunk across threads, and
// non-contiguous ones through temporaries copied back afterwards: a written
// tensor that shares memory with another argument would end up with whichever
// write came last, or be read after it changed. Such a call raises, naming the
// earliest such pair in argument order (`args` is in argument order).
// Overlap is decided as torch's own in-place ops decide it (at::get_overlap_status):
// between tensors whose elements are dense in memory it is always found; between
// strided views of one buffer (two columns of a matrix do not overlap, two
// diagonals may) it cannot be decided cheaply, and the call is let through.
// Tensors in distinct storages need no more; otherwise only tensors whose
// address ranges intersect are compared, after a sort by address, so sgd_'s
// lists of hundreds of tensors cost O(n log n), not O(n^2).
inline void check_no_overlap(const std::vector<OverlapArg>& args, const char* op) {
  StorageSet storages(args.size());
  bool distinct = true;
  for (const OverlapArg& arg : args) {
    if (arg.written) check_no_internal_overlap(arg, op);
    distinct = storages.insert(*arg.tensor) && distinct;
  }
  if (distinct) return;
  struct Span {
    uintptr_t begin;
    uintptr_t end;
    size_t arg;
  };
  std::vector<Span> spans;
  spans.reserve(args.size());
  for (size_t a = 0; a < args.size(); ++a) {
    const at::Tensor& t = *args[a].tensor;
    if (!t.defined() || t.numel() == 0) continue;
    int64_t low = 0, high = 0;  // element offsets of the first and last element in memory
    for (int64_t dim = 0; dim < t.dim(); ++dim) {
      const int64_t extent = t.stride(dim) * (t.size(dim) - 1);
      (extent < 0 ? low : high) += extent;
    }
    const uintptr_t data = reinterpret_cast<uintptr_t>(t.const_data_ptr());
    const int64_t item = static_cast<int64_t>(t.itemsize());
    spans.push_back({data + low * item, data + (high + 1) * item, a});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& l, const Span& r) { return l.begin < r.begin; });
  size_t first = args.size(), second = args.size();  // the pair to report: first < second
  for (size_t i = 0; i < spans.size(); ++i) {
    for (size_t j = i + 1; j < spans.size() && spans[j].begin < spans[i].end; ++j) {
      const size_t a = std::min(spans[i].arg, spans[j].arg), b = std::max(spans[i].arg, spans[j].arg);
      if (!args[a].written && !args[b].written) continue;
      const at::MemOverlapStatus status = at::get_overlap_status(*args[a].tensor, *args[b].tensor);
      if (status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial) continue;
      if (b < second || (b == second && a < first)) {
        first = a;
        second = b;
      }
    }
  }
  TORCH_CHECK(second == args.size(), "fused_linreg.", op, ": ", overlap_arg_name(args[second]),
              " shares memory with ", overlap_arg_name(args[first]), "; a tensor that ", op,
              " writes in place must not overlap another argument");
}

struct SgdOptions {
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
};

inline void check_finite_nonnegative(double value, const char* name) {
  TORCH_CHECK(std::isfinite(value) && value >= 0.0, "fused_linreg.sgd_: ", name,
              " must be finite and >= 0, got ", value);
}

inline void check_one_element_float(const std::optional<at::Tensor>& t, const char* arg,
                                    const at::Device& device) {
  if (!t.has_value() || !t->defined()) return;
  check_float_tensor(*t, "sgd_", arg);
  TORCH_CHECK(t->numel() == 1, "fused_linreg.sgd_: ", arg, " must have one element, got shape ", t->sizes());
  TORCH_CHECK(t->device() == device, "fused_linreg.sgd_: ", arg, " is on ", t->device(),
              " but params are on ", device);
}

inline void check_lr(double lr) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0.0, "fused_linreg.sgd_: lr must be finite and >= 0, got ", lr);
}

// A tensor lr lives on the params' device (read there, without a host sync) or on the CPU.
inline void check_lr_tensor(const at::Tensor& lr, at::TensorList params) {
  check_float_tensor(lr, "sgd_", "lr");
  TORCH_CHECK(lr.numel() == 1, "fused_linreg.sgd_: lr must have one element, got shape ", lr.sizes());
  TORCH_CHECK(params.empty() || lr.device() == params[0].device() || lr.device().is_cpu(),
              "fused_linreg.sgd_: lr is on ", lr.device(), " but params are on ", params[0].device());
}

// Validates every list entry before the kernel writes anything. lr is checked by
// the caller (a double, or a one-element tensor).
inline void check_sgd_args(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                           const c10::List<bool>& is_first_step, const SgdOptions& opt,
                           const std::optional<at::Tensor>& grad_scale,
                           const std::optional<at::Tensor>& found_inf) {
  check_finite_nonnegative(opt.weight_decay, "weight_decay");
  check_finite_nonnegative(opt.momentum, "momentum");
  TORCH_CHECK(std::isfinite(opt.dampening), "fused_linreg.sgd_: dampening must be finite, got ", opt.dampening);
  TORCH_CHECK(!opt.nesterov || (opt.momentum > 0.0 && opt.dampening == 0.0),
              "fused_linreg.sgd_: nesterov requires momentum > 0 and dampening == 0, got momentum=",
              opt.momentum, ", dampening=", opt.dampening);
  TORCH_CHECK(grads.size() == params.size(), "fused_linreg.sgd_: grads has ", grads.size(),
              " entries but params has ", params.size());
  const bool use_momentum = opt.momentum != 0.0;
  if (use_momentum) {
    TORCH_CHECK(momentum_buffers.size() == params.size(), "fused_linreg.sgd_: momentum_buffers has ",
                momentum_buffers.size(), " entries but params has ", params.size());
    TORCH_CHECK(is_first_step.size() == params.size(), "fused_linreg.sgd_: is_first_step has ",
                is_first_step.size(), " entries but params has ", params.size());
  }
  if (params.empty()) return;
  const at::Device device = params[0].device();
  // params are always written, grads when unscaled in place, buffers with momentum.
  const bool grads_written = grad_scale.has_value() && grad_scale->defined();
  StorageSet storages(3 * params.size());
  bool distinct_storages = true;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(p.defined(), "fused_linreg.sgd_: params[", i, "] is undefined");
    TORCH_CHECK(p.layout() == at::kStrided && at::isFloatingType(p.scalar_type()), "fused_linreg.sgd_: params[", i,
                "] must be a dense floating-point tensor, got ", p.scalar_type(), " with layout ", p.layout());
    TORCH_CHECK(p.device() == device, "fused_linreg.sgd_: params[", i, "] is on ", p.device(),
                " but params[0] is on ", device);
    TORCH_CHECK(at::has_internal_overlap(p) != at::MemOverlap::Yes, "fused_linreg.sgd_: params[", i,
                "] has elements that share memory (e.g. an expanded tensor) and cannot be updated in place");
    TORCH_CHECK(g.defined(), "fused_linreg.sgd_: grads[", i, "] is undefined (a parameter without a gradient)");
    TORCH_CHECK(g.layout() == at::kStrided, "fused_linreg.sgd_: grads[", i,
                "] must be dense, got layout ", g.layout(), " (sparse gradients are not supported)");
    TORCH_CHECK(g.scalar_type() == p.scalar_type() && g.device() == p.device() && g.sizes() == p.sizes(),
                "fused_linreg.sgd_: grads[", i, "] (", g.scalar_type(), ", ", g.device(), ", shape ", g.sizes(),
                ") must match params[", i, "] (", p.scalar_type(), ", ", p.device(), ", shape ", p.sizes(), ")");
    distinct_storages = storages.insert(p) && storages.insert(g) && distinct_storages;
    if (use_momentum) {
      const at::Tensor& b = momentum_buffers[i];
      TORCH_CHECK(b.defined(), "fused_linreg.sgd_: momentum_buffers[", i, "] is undefined");
      TORCH_CHECK(b.layout() == at::kStrided && b.scalar_type() == p.scalar_type() && b.device() == p.device() &&
                      b.sizes() == p.sizes(),
                  "fused_linreg.sgd_: momentum_buffers[", i, "] (", b.scalar_type(), ", ", b.device(), ", shape ",
                  b.sizes(), ") must match params[", i, "] (", p.scalar_type(), ", ", p.device(), ", shape ",
                  p.sizes(), ")");
      distinct_storages = storages.insert(b) && distinct_storages;
    }
  }
  check_one_element_float(grad_scale, "grad_scale", device);
  check_one_element_float(found_inf, "found_inf", device);
  if (distinct_storages) {
    // No two overlap; only the written tensors' own elements remain to check.
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t index = static_cast<int64_t>(i);
      if (grads_written) check_no_internal_overlap({&grads[i], "grads", index, true}, "sgd_");
      if (use_momentum) check_no_internal_overlap({&momentum_buffers[i], "momentum_buffers", index, true}, "sgd_");
    }
    return;
  }
  std::vector<OverlapArg> tensors;
  tensors.reserve(3 * params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    tensors.push_back({&params[i], "params", static_cast<int64_t>(i), true});
  }
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

// The fused linear-regression ops: X (n, d), y (n) or (n, k), weight (k, d), bias (k).
inline void check_linreg_args(const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, const char* op) {
  check_float_tensor(X, op, "X");
  check_float_tensor(y, op, "y");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(y, X, op, "y", "X");
  check_same_dtype_device(weight, X, op, "weight", "X");
  TORCH_CHECK(X.dim() == 2, "fused_linreg.", op, ": X must be 2-D (n, d), got shape ", X.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == X.size(1), "fused_linreg.", op,
              ": weight must have shape (k, ", X.size(1), ") to match X (shape ", X.sizes(), "), got ",
              weight.sizes());
  const int64_t k = weight.size(0);
  const bool y_fits = (y.dim() == 2 && y.size(0) == X.size(0) && y.size(1) == k) ||
                      (y.dim() == 1 && y.size(0) == X.size(0) && k == 1);
  TORCH_CHECK(y_fits, "fused_linreg.", op, ": y must have shape (", X.size(0), ", ", k, ")",
              k == 1 ? " or (n,)" : "", " to match X (shape ", X.sizes(), ") and weight (shape ", weight.sizes(),
              "), got ", y.sizes());
  if (bias.has_value() && bias->defined()) {
    check_float_tensor(*bias, op, "bias");
    check_same_dtype_device(*bias, X, op, "bias", "X");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == k, "fused_linreg.", op, ": bias must have shape (", k,
                ",), got ", bias->sizes());
  }
}

inline void check_momentum_buffer(const std::optional<at::Tensor>& buffer, const at::Tensor& param, const char* op,
                                  const char* arg) {
  TORCH_CHECK(buffer.has_value() && buffer->defined(), "fused_linreg.", op, ": ", arg,
              " is required when momentum != 0");
  TORCH_CHECK(buffer->layout() == at::kStrided && buffer->scalar_type() == param.scalar_type() &&
                  buffer->device() == param.device() && buffer->sizes() == param.sizes(),
              "fused_linreg.", op, ": ", arg, " (", buffer->scalar_type(), ", ", buffer->device(), ", shape ",
              buffer->sizes(), ") must match its parameter (", param.scalar_type(), ", ", param.device(), ", shape ",
              param.sizes(), ")");
}

inline void check_linreg_update_args(const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                     const std::optional<at::Tensor>& weight_momentum,
                                     const std::optional<at::Tensor>& bias_momentum, double lr,
                                     const SgdOptions& opt, const char* op) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0.0, "fused_linreg.", op, ": lr must be finite and >= 0, got ", lr);
  TORCH_CHECK(std::isfinite(opt.weight_decay) && opt.weight_decay >= 0.0, "fused_linreg.", op,
              ": weight_decay must be finite and >= 0, got ", opt.weight_decay);
  TORCH_CHECK(std::isfinite(opt.momentum) && opt.momentum >= 0.0, "fused_linreg.", op,
              ": momentum must be finite and >= 0, got ", opt.momentum);
  TORCH_CHECK(std::isfinite(opt.dampening), "fused_linreg.", op, ": dampening must be finite, got ", opt.dampening);
  TORCH_CHECK(!opt.nesterov || (opt.momentum > 0.0 && opt.dampening == 0.0), "fused_linreg.", op,
              ": nesterov requires momentum > 0 and dampening == 0, got momentum=", opt.momentum,
              ", dampening=", opt.dampening);
  if (opt.momentum != 0.0) {
    check_momentum_buffer(weight_momentum, weight, op, "weight_momentum");
    if (bias.has_value() && bias->defined()) check_momentum_buffer(bias_momentum, *bias, op, "bias_momentum");
  }
}

// linreg_step_ / linreg_epoch_ write weight, bias and, with momentum, the buffers;
// they read X, y and the epoch's indices (undefined for a step) meanwhile: the
// epoch reads each minibatch after the previous update.
inline void check_linreg_no_overlap(const at::Tensor& X, const at::Tensor& y, const at::Tensor& indices,
                                    const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                    const std::optional<at::Tensor>& weight_momentum,
                                    const std::optional<at::Tensor>& bias_momentum, double momentum,
                                    const char* op) {
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

// indices: int64 (m,) on X's device; its values are range-checked by the caller.
inline void check_epoch_indices(const at::Tensor& indices, const at::Tensor& X, int64_t batch_size) {
  TORCH_CHECK(batch_size >= 1, "fused_linreg.linreg_epoch_: batch_size must be >= 1, got ", batch_size);
  TORCH_CHECK(indices.scalar_type() == at::kLong && indices.dim() == 1, "fused_linreg.linreg_epoch_: indices must be ",
              "a 1-D int64 tensor, got ", indices.scalar_type(), " of shape ", indices.sizes());
  TORCH_CHECK(indices.device() == X.device(), "fused_linreg.linreg_epoch_: indices is on ", indices.device(),
              " but X is on ", X.device());
  TORCH_CHECK(indices.numel() >= 1, "fused_linreg.linreg_epoch_: indices is empty (an epoch needs at least one row)");
}

// Every row number of a contiguous CPU int64 `rows` is a row of X (num_rows rows);
// the error names the first one that is not.
inline void check_epoch_rows_in_range(const at::Tensor& rows, int64_t num_rows) {
  const int64_t* ids = rows.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < rows.numel(); ++i) {
    TORCH_CHECK(ids[i] >= 0 && ids[i] < num_rows, "fused_linreg.linreg_epoch_: indices[", i, "] = ", ids[i],
                " is out of range for X with ", num_rows, " rows");
  }
}

}  // namespace fused_linreg
