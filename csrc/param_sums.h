// How every kernel of both devices numbers the sums that one pass over rows
// accumulates for a linear model's gradients: output o owns `features` weight
// sums (o * (features + 1) + c) and then its bias sum (o * (features + 1) +
// features); the fused linreg ops keep the loss sum after all of them.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace fused_linreg {

struct ParamSums {
  int64_t features;
  int64_t outputs;

  C10_HOST_DEVICE int64_t per_output() const { return features + 1; }
  C10_HOST_DEVICE int64_t count() const { return outputs * per_output(); }  // the gradient sums
  C10_HOST_DEVICE int64_t loss() const { return count(); }                  // the loss sum's index
  C10_HOST_DEVICE int64_t count_with_loss() const { return count() + 1; }
  C10_HOST_DEVICE int64_t output_of(int64_t e) const { return e / per_output(); }
  C10_HOST_DEVICE int64_t column_of(int64_t e) const { return e % per_output(); }
  C10_HOST_DEVICE bool is_bias(int64_t e) const { return column_of(e) == features; }
};

}  // namespace fused_linreg
