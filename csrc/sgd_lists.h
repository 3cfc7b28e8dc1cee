// The tensor lists of sgd_ as the kernels see them: contiguous. A
// non-contiguous parameter, grad or buffer is updated in a contiguous
// temporary that is copied back afterwards (a rare path: optimizers'
// parameters are contiguous). Shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <vector>

namespace fused_linreg {

class SgdWorkList {
 public:
  // writes_grads: the kernels unscale the grads in place (a grad_scale was
  // given). Otherwise grads are only read and never copied back, so a grad may
  // be any view, an expanded (stride-0) one included.
  SgdWorkList(at::TensorList params, at::TensorList grads, at::TensorList buffers, const c10::List<bool>& is_first_step,
              bool use_momentum, bool writes_grads)
      : originals_{std::vector<at::Tensor>(params.begin(), params.end()),
                   writes_grads ? std::vector<at::Tensor>(grads.begin(), grads.end()) : std::vector<at::Tensor>(),
                   use_momentum ? std::vector<at::Tensor>(buffers.begin(), buffers.end()) : std::vector<at::Tensor>()} {
    this->is_first_step = is_first_step.vec();
    this->params = contiguous_all(originals_[0]);
    this->grads = contiguous_all(std::vector<at::Tensor>(grads.begin(), grads.end()));
    this->buffers = contiguous_all(originals_[2]);
  }

  // Writes the temporaries of the non-contiguous tensors the kernels wrote back
  // into them.
  void copy_back() {
    copy_back_list(originals_[0], params);
    copy_back_list(originals_[1], grads);
    copy_back_list(originals_[2], buffers);
  }

  std::vector<at::Tensor> params;
  std::vector<at::Tensor> grads;
  std::vector<at::Tensor> buffers;
  std::vector<bool> is_first_step;

 private:
  // The caller's written tensors: params, grads (empty unless written), buffers
  // (empty without momentum).
  static std::vector<at::Tensor> contiguous_all(const std::vector<at::Tensor>& tensors) {
    std::vector<at::Tensor> result;
    result.reserve(tensors.size());
    for (const at::Tensor& t : tensors) result.push_back(t.contiguous());
    return result;
  }

  static void copy_back_list(std::vector<at::Tensor>& originals, const std::vector<at::Tensor>& work) {
    for (size_t i = 0; i < originals.size(); ++i) {
      if (!originals[i].is_same(work[i])) originals[i].copy_(work[i]);
    }
  }

  std::vector<at::Tensor> originals_[3];
};

}  // namespace fused_linreg
