// The SGD update, shared by sgd_ and the fused linreg step on both devices. It
// follows torch.optim.SGD (_single_tensor_sgd) step by step, in opmath (float
// for the half types), so that every kernel computes the same numbers.
#pragma once

#include <c10/macros/Macros.h>

namespace fused_linreg {

// The hyperparameters besides lr, as the ops take them (doubles).
struct SgdOptions {
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
};

// All hyperparameters in the type the update computes in.
template <typename opmath_t>
struct SgdScalars {
  opmath_t lr;
  opmath_t weight_decay;
  opmath_t momentum;
  opmath_t dampening;
  bool nesterov;
  bool maximize;
};

// The one conversion from the ops' doubles to a kernel's opmath_t.
template <typename opmath_t>
inline SgdScalars<opmath_t> sgd_scalars(double lr, const SgdOptions& opt) {
  return {static_cast<opmath_t>(lr),           static_cast<opmath_t>(opt.weight_decay),
          static_cast<opmath_t>(opt.momentum), static_cast<opmath_t>(opt.dampening),
          opt.nesterov,                        opt.maximize};
}

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
