// The CPU kernel of linreg_gram: a block of rows of X and y written as the
// augmented float64 rows sqrt(w_i) * [x_i - x_shift, y_i - y_shift, 1], whose
// Gram matrix the front accumulates with the BLAS. One read of each row,
// converted and shifted in registers.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>

#include "kernels.h"

namespace fused_linreg {
namespace {

template <typename scalar_t>
void write_augmented_rows(const scalar_t* X, const scalar_t* y, const double* sample_weight, const double* x_shift,
                          const double* y_shift, int64_t n, int64_t d, int64_t k, double* rows) {
  const int64_t m = d + k + 1;
  for (int64_t i = 0; i < n; ++i) {
    const double scale = sample_weight != nullptr ? std::sqrt(sample_weight[i]) : 1.0;
    const scalar_t* x = X + i * d;
    const scalar_t* t = y + i * k;
    double* row = rows + i * m;
    for (int64_t j = 0; j < d; ++j) row[j] = (static_cast<double>(x[j]) - x_shift[j]) * scale;
    for (int64_t j = 0; j < k; ++j) row[d + j] = (static_cast<double>(t[j]) - y_shift[j]) * scale;
    row[d + k] = scale;
  }
}

}  // namespace

void CPU_CAPABILITY::CpuKernels::augmented_rows(const at::Tensor& X, const at::Tensor& y2d,
                                              const std::optional<at::Tensor>& sample_weight,
                                              const at::Tensor& x_shift, const at::Tensor& y_shift,
                                              const at::Tensor& rows) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, X.scalar_type(), "fused_linreg.linreg_gram", [&] {
    write_augmented_rows(X.const_data_ptr<scalar_t>(), y2d.const_data_ptr<scalar_t>(),
                         sample_weight ? sample_weight->const_data_ptr<double>() : nullptr,
                         x_shift.const_data_ptr<double>(), y_shift.const_data_ptr<double>(), X.size(0), X.size(1),
                         y2d.size(1), rows.mutable_data_ptr<double>());
  });
}

}  // namespace fused_linreg
