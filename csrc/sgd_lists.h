// The tensor lists of sgd_ as the kernels see them: contiguous. When every
// tensor of a list is contiguous (optimizers' parameters are), the kernels use
// the caller's list as it is; otherwise the list's tensors are updated in
// contiguous temporaries that are copied back afterwards. Shared by the CPU and
// CUDA kernels.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

namespace fused_linreg {

class SgdWorkList {
 public:
  // writes_grads: the kernels unscale the grads in place (a grad_scale was
  // given). Otherwise grads are only read and never copied back, so a grad may
  // be any view, an expanded (stride-0) one included. The lists must outlive
  // this object.
  SgdWorkList(at::TensorList params, at::TensorList grads, at::TensorList buffers, const c10::List<bool>& is_first_step,
              bool use_momentum, bool writes_grads)
      : originals_{params, writes_grads ? grads : at::TensorList(), use_momentum ? buffers : at::TensorList()},
        params(contiguous_all(params, temporaries_[0])),
        grads(contiguous_all(grads, temporaries_[1])),
        buffers(contiguous_all(originals_[2], temporaries_[2])),
        is_first_step(is_first_step.vec()) {}

  // Writes the temporaries the kernels wrote back into the caller's tensors.
  void copy_back() {
    for (size_t list = 0; list < 3; ++list) {
      const std::vector<at::Tensor>& work = temporaries_[list];
      for (size_t i = 0; i < std::min(work.size(), originals_[list].size()); ++i) {
        if (!originals_[list][i].is_same(work[i])) originals_[list][i].copy_(work[i]);
      }
    }
  }

 private:
  static at::TensorList contiguous_all(at::TensorList tensors, std::vector<at::Tensor>& temporaries) {
    if (std::all_of(tensors.begin(), tensors.end(), [](const at::Tensor& t) { return t.is_contiguous(); })) {
      return tensors;
    }
    temporaries.reserve(tensors.size());
    for (const at::Tensor& t : tensors) temporaries.push_back(t.contiguous());
    return temporaries;
  }

  // The caller's written lists: params, grads (empty unless written), buffers
  // (empty without momentum); and the temporaries standing in for each list
  // (empty where the list is used as it is).
  at::TensorList originals_[3];
  std::vector<at::Tensor> temporaries_[3];

 public:
  at::TensorList params;
  at::TensorList grads;
  at::TensorList buffers;
  std::vector<bool> is_first_step;
};

}  // namespace fused_linreg
