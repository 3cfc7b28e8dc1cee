// linreg_gram: the sums of the normal equations of (weighted) least squares in
// one pass over X, as one float64 matrix: G = sum_i w_i a_i a_i^T with the
// augmented row a_i = [x_i - x_shift, y_i - y_shift, 1]. Its blocks hold
// sum w z z^T, sum w z u^T, sum w u u^T, sum w z, sum w u and sum w (z, u the
// shifted x and y), everything an exact least-squares fit with an intercept
// needs; G adds over row shards that share the shifts (chunks of a memory map,
// ranks of torch.distributed). The shifts (any point near the data's mean) keep
// the centred sums from cancelling.
//
// One read of X: the kernels convert rows to float64 and shift them in blocks
// that stay in cache, and sum the blocks' products (cpu/gram.cpp: register
// tiles of the upper triangle; cuda/gram.cu: cuBLAS). The CPU sums over a fixed
// partition of the rows, partial sums added in order: the result does not
// depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>

#include "checks.h"
#include "kernels.h"

namespace fused_linreg {
namespace {

constexpr const char* kOp = "linreg_gram";

void check_shift(const at::Tensor& shift, int64_t size, const at::Tensor& X, const char* arg) {
  TORCH_CHECK(shift.defined() && shift.layout() == at::kStrided && shift.scalar_type() == at::kDouble,
              "fused_linreg.linreg_gram: ", arg, " must be a float64 tensor");
  TORCH_CHECK(shift.dim() == 1 && shift.size(0) == size, "fused_linreg.linreg_gram: ", arg, " must have shape (",
              size, ",), got ", shift.sizes());
  TORCH_CHECK(shift.device() == X.device(), "fused_linreg.linreg_gram: ", arg, " is on ", shift.device(),
              " but X is on ", X.device());
}

void check_gram_args(const at::Tensor& X, const at::Tensor& y, const std::optional<at::Tensor>& sample_weight,
                     const at::Tensor& x_shift, const at::Tensor& y_shift) {
  check_float_tensor(X, kOp, "X");
  check_float_tensor(y, kOp, "y");
  check_same_dtype_device(y, X, kOp, "y", "X");
  TORCH_CHECK(X.dim() == 2, "fused_linreg.linreg_gram: X must be 2-D (n, d), got shape ", X.sizes());
  TORCH_CHECK((y.dim() == 1 || (y.dim() == 2 && y.size(1) >= 1)) && y.size(0) == X.size(0),
              "fused_linreg.linreg_gram: y must have shape (", X.size(0), ",) or (", X.size(0),
              ", k) with k >= 1 to match X, got ", y.sizes());
  check_shift(x_shift, X.size(1), X, "x_shift");
  check_shift(y_shift, y.dim() == 1 ? 1 : y.size(1), X, "y_shift");
  if (!sample_weight.has_value()) return;
  check_float_tensor(*sample_weight, kOp, "sample_weight");
  TORCH_CHECK(sample_weight->device() == X.device(), "fused_linreg.linreg_gram: sample_weight is on ",
              sample_weight->device(), " but X is on ", X.device());
  TORCH_CHECK(sample_weight->dim() == 1 && sample_weight->size(0) == X.size(0),
              "fused_linreg.linreg_gram: sample_weight must have shape (", X.size(0), ",), got ", sample_weight->sizes());
}

// The CPU's fixed partition: chunks of about kChunkRows rows, each summed by one
// thread into its own partial sum, the partial sums added in chunk order. The
// threads take chunks one at a time from a shared counter rather than an equal
// share each: a thread that starts late (an idle VM core takes milliseconds to
// be scheduled again) then leaves its chunks to the others instead of holding
// up the whole pass.
at::Tensor cpu_gram(const at::Tensor& X, const at::Tensor& y2d, const std::optional<at::Tensor>& weight,
                    const at::Tensor& x_shift, const at::Tensor& y_shift, int64_t m) {
  constexpr int64_t kChunkRows = 16384;
  constexpr int64_t kMaxChunks = 64;
  constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;
  const int64_t n = X.size(0);
  const int64_t partial_bytes = m * m * static_cast<int64_t>(sizeof(double));
  const int64_t chunks = std::max<int64_t>(
      1, std::min({(n + kChunkRows - 1) / kChunkRows, kMaxChunks, kMaxPartialBytes / partial_bytes}));
  const at::Tensor partials = at::zeros({chunks, m, m}, X.options().dtype(at::kDouble));
  std::atomic<int64_t> next_chunk{0};
  at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1, [&](int64_t /*begin*/, int64_t /*end*/) {
    for (int64_t chunk = next_chunk++; chunk < chunks; chunk = next_chunk++) {
      const int64_t first = n * chunk / chunks, last = n * (chunk + 1) / chunks;
      const std::optional<at::Tensor> weight_part =
          weight ? std::optional<at::Tensor>(weight->slice(0, first, last)) : std::nullopt;
      DeviceKernels<c10::kCPU>::gram_rows(X.slice(0, first, last), y2d.slice(0, first, last), weight_part, x_shift,
                                          y_shift, partials[chunk]);
    }
  });
  at::Tensor gram = partials[0];
  for (int64_t chunk = 1; chunk < chunks; ++chunk) gram.add_(partials[chunk]);
  return gram;
}

template <c10::DeviceType kDevice>
at::Tensor linreg_gram(const at::Tensor& X, const at::Tensor& y, const std::optional<at::Tensor>& sample_weight,
                       const at::Tensor& x_shift, const at::Tensor& y_shift) {
  check_gram_args(X, y, sample_weight, x_shift, y_shift);
  const c10::OptionalDeviceGuard device_guard(X.device());
  const int64_t n = X.size(0), d = X.size(1), k = y.dim() == 1 ? 1 : y.size(1);
  const int64_t m = d + k + 1;
  std::optional<at::Tensor> weight;
  if (sample_weight.has_value()) {
    weight = sample_weight->to(at::kDouble).contiguous();
    TORCH_CHECK(weight->ge(0).all().item<bool>(),
                "fused_linreg.linreg_gram: sample_weight must be non-negative (and not NaN)");
  }
  if (n == 0) return at::zeros({m, m}, X.options().dtype(at::kDouble));
  const at::Tensor X_c = X.contiguous(), y2d = y.reshape({n, k}).contiguous();
  const at::Tensor x_shift_c = x_shift.contiguous(), y_shift_c = y_shift.contiguous();
  if constexpr (kDevice == c10::kCPU) {
    return cpu_gram(X_c, y2d, weight, x_shift_c, y_shift_c, m);
  } else {
    const at::Tensor gram = at::zeros({m, m}, X.options().dtype(at::kDouble));
    DeviceKernels<kDevice>::gram_rows(X_c, y2d, weight, x_shift_c, y_shift_c, gram);
    return gram;
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) { m.impl("linreg_gram", &linreg_gram<c10::kCPU>); }

#ifdef FUSED_LINREG_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) { m.impl("linreg_gram", &linreg_gram<c10::kCUDA>); }
#endif

}  // namespace fused_linreg
