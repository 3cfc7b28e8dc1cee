// The per-element SGD update, shared by the CPU and CUDA kernels. It follows
// torch.optim.SGD (_single_tensor_sgd) step by step, in opmath (float for the
// half types), so both devices compute the same numbers.
#pragma once

#include <c10/macros/Macros.h>

namespace fused_linreg {

template <typename opmath_t>
struct SgdScalars {
  opmath_t lr;
  opmath_t weight_decay;
  opmath_t momentum;
  opmath_t dampening;
  bool nesterov;
  bool maximize;
};

// Returns the new parameter value. `grad` is already unscaled; `buf` is read
// (unless first_step) and written when momentum is used.
template <typename opmath_t>
C10_HOST_DEVICE inline opmath_t sgd_update(opmath_t param, opmath_t grad, opmath_t& buf, bool first_step,
                                           const SgdScalars<opmath_t>& s) {
  opmath_t d = s.maximize ? -grad : grad;
  if (s.weight_decay != opmath_t(0)) {
    d += s.weight_decay * param;
  }
  if (s.momentum != opmath_t(0)) {
    buf = first_step ? d : s.momentum * buf + (opmath_t(1) - s.dampening) * d;
    d = s.nesterov ? d + s.momentum * buf : buf;
  }
  return param - s.lr * d;
}

}  // namespace fused_linreg
