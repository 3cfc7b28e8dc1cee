// Argument checks that several ops' fronts share (each op's own checks live in
// its front, csrc/<op>.cpp). The fronts run them before anything is written,
// on both devices alike. Messages name the op and the argument:
// "fused_linreg.<op>: <argument> ...".
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/ArrayRef.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace fused_linreg
