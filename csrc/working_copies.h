// Contiguous working copies of an op's tensor arguments, for the kernels, which
// read and write contiguous memory. A list whose tensors are all contiguous
// (optimizers' parameters, the usual weight and bias) is used as it is, with
// no copy; otherwise each tensor is replaced by a contiguous copy, and for a
// list the op writes, copy_back() writes the copies into the caller's tensors
// after the kernels ran. Undefined entries (absent optional arguments) stay
// undefined. Used by every in-place op on every device.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

namespace fused_linreg {

class WorkingCopies {
 public:
  // The caller's tensors must outlive this object. `written`: the kernels write
  // them (only then are copies written back, so a list that is only read may
  // hold any view, an expanded one included).
  WorkingCopies(at::TensorList originals, bool written) : originals_(originals), written_(written) {
    const bool contiguous = std::all_of(originals.begin(), originals.end(),
                                        [](const at::Tensor& t) { return !t.defined() || t.is_contiguous(); });
    if (contiguous) return;
    copies_.reserve(originals.size());
    for (const at::Tensor& t : originals) copies_.push_back(t.defined() ? t.contiguous() : t);
  }

  at::TensorList tensors() const { return copies_.empty() ? originals_ : at::TensorList(copies_); }

  void copy_back() const {
    if (!written_) return;
    for (size_t i = 0; i < copies_.size(); ++i) {
      if (copies_[i].defined() && !copies_[i].is_same(originals_[i])) originals_[i].copy_(copies_[i]);
    }
  }

 private:
  at::TensorList originals_;
  std::vector<at::Tensor> copies_;  // empty when the originals are used as they are
  bool written_;
};

}  // namespace fused_linreg
