// Whether strided tensors share an element, decided exactly for any strides.
// torch's own test (at::get_overlap_status) answers "too hard" for views that
// are not dense, e.g. x[0::2] and x[1::2] (disjoint) or x[:, 0:2] and x[:, 1:3]
// (they share a column), and lets them through; an in-place op then keeps
// whichever write came last. Here a view is reduced to its canonical layout
// (positive strides, outermost first, mergeable dimensions merged); when its
// strides nest (each larger than the span of the ones inside it, as for every
// slice of a contiguous tensor) an address belongs to it iff greedy division
// by the strides leaves no remainder; other layouts are enumerated.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <unordered_set>

namespace fused_linreg {

// A non-empty tensor's elements as offsets, in elements, from the lowest one:
// { sum_k i_k * stride_k : 0 <= i_k < size_k }, strides positive and decreasing.
struct StridedLayout {
  struct Dim {
    int64_t size;
    int64_t stride;
  };
  int64_t base;  // the lowest element's address, in elements from the storage's data pointer
  c10::SmallVector<Dim, 6> dims;

  explicit StridedLayout(const at::Tensor& t) {
    base = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) {
      int64_t size = t.size(d), stride = t.stride(d);
      if (size == 1) continue;
      if (stride < 0) {
        base += stride * (size - 1);
        stride = -stride;
      }
      dims.push_back({size, stride});
    }
    std::sort(dims.begin(), dims.end(), [](const Dim& l, const Dim& r) { return l.stride > r.stride; });
    // Merge an outer dimension into the next inner one when they are contiguous with each other.
    c10::SmallVector<Dim, 6> merged;
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) {
      if (!merged.empty() && merged.back().stride * merged.back().size == it->stride) {
        merged.back().size *= it->size;
      } else {
        merged.push_back(*it);
      }
    }
    dims.assign(merged.rbegin(), merged.rend());
  }

  int64_t last() const {  // the highest element's offset
    int64_t span = 0;
    for (const Dim& d : dims) span += d.stride * (d.size - 1);
    return base + span;
  }

  // Each stride exceeds the span of the dimensions inside it: every element has
  // one address and greedy division finds it.
  bool nested() const {
    int64_t inner_span = 0;
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) {
      if (it->stride <= inner_span) return false;
      inner_span += it->stride * (it->size - 1);
    }
    return true;
  }

  // For a nested layout: whether `address` (in elements) is one of its elements.
  bool contains(int64_t address) const {
    int64_t rest = address - base;
    if (rest < 0) return false;
    for (const Dim& d : dims) {
      const int64_t index = rest / d.stride;
      if (index >= d.size) return false;
      rest -= index * d.stride;
    }
    return rest == 0;
  }

  // Calls f(address) for every element, innermost dimension fastest; stops when f returns true.
  template <typename F>
  bool any_element(F&& f) const {
    c10::SmallVector<int64_t, 6> index(dims.size(), 0);
    int64_t address = base;
    while (true) {
      if (f(address)) return true;
      int64_t d = static_cast<int64_t>(dims.size()) - 1;
      for (; d >= 0; --d) {
        address += dims[d].stride;
        if (++index[d] < dims[d].size) break;
        address -= dims[d].stride * dims[d].size;
        index[d] = 0;
      }
      if (d < 0) return false;
    }
  }
};

// Whether two elements of t share memory (torch's in-place ops only catch
// stride 0; e.g. as_strided((3, 3), (1, 1)) is caught here too).
inline bool has_internal_overlap_exact(const at::Tensor& t) {
  if (t.numel() <= 1 || t.is_non_overlapping_and_dense()) return false;
  const StridedLayout layout(t);
  if (layout.nested()) return false;
  std::unordered_set<int64_t> seen;
  seen.reserve(static_cast<size_t>(t.numel()));
  return layout.any_element([&](int64_t address) { return !seen.insert(address).second; });
}

// Whether a and b (non-empty, in one storage) share memory. Exact for one
// element size; views of one buffer as two dtypes count as sharing when their
// byte ranges intersect.
inline bool share_memory(const at::Tensor& a, const at::Tensor& b) {
  const StridedLayout la(a), lb(b);
  const auto a_item = static_cast<int64_t>(a.itemsize()), b_item = static_cast<int64_t>(b.itemsize());
  // Byte ranges from the storage's data pointer.
  if ((la.last() + 1) * a_item <= lb.base * b_item || (lb.last() + 1) * b_item <= la.base * a_item) return false;
  if (a_item != b_item) return true;
  if (a.is_non_overlapping_and_dense() && b.is_non_overlapping_and_dense()) return true;
  // Enumerate one (the smaller if both nest) and look its elements up in the other.
  const bool a_nested = la.nested(), b_nested = lb.nested();
  const bool enumerate_a = b_nested && (!a_nested || a.numel() <= b.numel());
  const StridedLayout& listed = enumerate_a ? la : lb;
  const StridedLayout& looked_up = enumerate_a ? lb : la;
  const int64_t low = looked_up.base, high = looked_up.last();
  const auto in_range = [&](int64_t address) { return address >= low && address <= high; };
  if (looked_up.nested()) {
    return listed.any_element([&](int64_t address) { return in_range(address) && looked_up.contains(address); });
  }
  std::unordered_set<int64_t> elements;
  looked_up.any_element([&](int64_t address) {
    elements.insert(address);
    return false;
  });
  return listed.any_element([&](int64_t address) { return in_range(address) && elements.count(address) != 0; });
}

}  // namespace fused_linreg
