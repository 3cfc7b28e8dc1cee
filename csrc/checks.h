// Argument checks that several ops' fronts share (each op's own checks live in
// its front, csrc/<op>.cpp). The fronts run them before anything is written,
// on both devices alike. Messages name the op and the argument:
// "fused_linreg.<op>: <argument> ...".
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "memory_overlap.h"
#include "torch_internals.h"
#include "pointer_map.h"
#include "sgd_math.h"

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
  explicit StorageSet(size_t expected) : storages_(expected) {}

  // Adds t's storage; false if it was there already (or t has none to compare).
  bool insert(const at::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return true;
    return t.has_storage() && storages_.insert(storage_identity(t), true);
  }

 private:
  PointerMap<bool> storages_;
};

// A tensor the op writes in place: not an inference tensor outside inference
// mode (torch refuses to update one, but only after our kernel wrote it), and
// without elements that share memory: an expanded (stride-0) tensor would be
// written through a contiguous temporary whose copy back fails, after the other
// updates are done.
inline void check_writable(const OverlapArg& arg, const char* op) {
  const at::Tensor& t = *arg.tensor;
  if (!t.defined()) return;
  TORCH_CHECK(!t.is_inference() || c10::InferenceMode::is_enabled(), "fused_linreg.", op, ": ",
              overlap_arg_name(arg),
              " is an inference tensor (made under torch.inference_mode()) and cannot be updated in place outside "
              "inference mode; clone it first");
  TORCH_CHECK(!has_internal_overlap_exact(t), "fused_linreg.", op, ": ", overlap_arg_name(arg),
              " has elements that share memory (e.g. an expanded tensor) and cannot be written in place");
}

// The in-place ops write their tensors chunk by chunk across threads, and
// non-contiguous ones through temporaries copied back afterwards: a written
// tensor that shares memory with another argument would end up with whichever
// write came last, or be read after it changed. Such a call raises, naming the
// earliest such pair in argument order (`args` is in argument order).
// Overlap means a shared element, decided exactly for any strides
// (memory_overlap.h): x[0::2] and x[1::2] may both be written, x[:, 0:2] and
// x[:, 1:3] may not. Tensors in distinct storages need no more; otherwise only
// tensors whose address ranges intersect are compared, after a sort by
// address, so sgd_'s lists of hundreds of tensors cost O(n log n), not O(n^2).
inline void check_no_overlap(const std::vector<OverlapArg>& args, const char* op) {
  StorageSet storages(args.size());
  bool distinct = true;
  for (const OverlapArg& arg : args) {
    if (arg.written) check_writable(arg, op);
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
    // A tensor without storage (a wrapper subclass) has no address to compare.
    if (!t.defined() || t.numel() == 0 || !t.has_storage()) continue;
    const StridedLayout layout(t);
    const uintptr_t storage = reinterpret_cast<uintptr_t>(t.storage().data());
    const auto item = static_cast<uintptr_t>(t.itemsize());
    spans.push_back({storage + static_cast<uintptr_t>(layout.base) * item,
                     storage + static_cast<uintptr_t>(layout.last() + 1) * item, a});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& l, const Span& r) { return l.begin < r.begin; });
  size_t first = args.size(), second = args.size();  // the pair to report: first < second
  for (size_t i = 0; i < spans.size(); ++i) {
    for (size_t j = i + 1; j < spans.size() && spans[j].begin < spans[i].end; ++j) {
      const size_t a = std::min(spans[i].arg, spans[j].arg), b = std::max(spans[i].arg, spans[j].arg);
      if (!args[a].written && !args[b].written) continue;
      if (!args[a].tensor->is_alias_of(*args[b].tensor) || !share_memory(*args[a].tensor, *args[b].tensor)) continue;
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

inline void check_lr(double lr, const char* op) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0.0, "fused_linreg.", op, ": lr must be finite and >= 0, got ", lr);
}

// The hyperparameters of torch.optim.SGD's update besides lr (sgd_ and the linreg steps).
inline void check_sgd_options(const SgdOptions& opt, const char* op) {
  TORCH_CHECK(std::isfinite(opt.weight_decay) && opt.weight_decay >= 0.0, "fused_linreg.", op,
              ": weight_decay must be finite and >= 0, got ", opt.weight_decay);
  TORCH_CHECK(std::isfinite(opt.momentum) && opt.momentum >= 0.0, "fused_linreg.", op,
              ": momentum must be finite and >= 0, got ", opt.momentum);
  TORCH_CHECK(std::isfinite(opt.dampening), "fused_linreg.", op, ": dampening must be finite, got ", opt.dampening);
  TORCH_CHECK(!opt.nesterov || (opt.momentum > 0.0 && opt.dampening == 0.0), "fused_linreg.", op,
              ": nesterov requires momentum > 0 and dampening == 0, got momentum=", opt.momentum,
              ", dampening=", opt.dampening);
}

// Every check sgd_ makes before it writes (sgd.cpp); lr_tensor, when given, is
// the learning rate instead of lr. The optimizer's step checks every group with
// it before it updates any.
void check_sgd_call(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                    const c10::List<bool>& is_first_step, double lr, const std::optional<at::Tensor>& lr_tensor,
                    const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf);

}  // namespace fused_linreg
