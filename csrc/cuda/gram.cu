// The CUDA kernel of linreg_gram (front: gram.cpp): blocks of rows written as
// the augmented float64 rows sqrt(w_i) * [x_i - x_shift, y_i - y_shift, 1], one
// thread per element (consecutive threads read consecutive elements of a row),
// each block's Gram matrix added by cuBLAS (DGEMM: deterministic, and at the
// GPU's float64 rate).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernel_utils.cuh"
#include "kernels.h"

namespace fused_linreg {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    augmented_rows_kernel(const scalar_t* __restrict__ X, const scalar_t* __restrict__ y,
                          const double* __restrict__ sample_weight, const double* __restrict__ x_shift,
                          const double* __restrict__ y_shift, int64_t n, int64_t d, int64_t k,
                          double* __restrict__ rows) {
  const int64_t m = d + k + 1;
  const int64_t numel = n * m;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < numel; e += stride) {
    const int64_t i = e / m, j = e % m;
    const double scale = sample_weight != nullptr ? sqrt(sample_weight[i]) : 1.0;
    double value = 1.0;
    if (j < d) {
      value = static_cast<double>(X[i * d + j]) - x_shift[j];
    } else if (j < d + k) {
      value = static_cast<double>(y[i * k + (j - d)]) - y_shift[j - d];
    }
    rows[e] = value * scale;
  }
}

void write_rows(const at::Tensor& X, const at::Tensor& y2d, const std::optional<at::Tensor>& sample_weight,
                const at::Tensor& x_shift, const at::Tensor& y_shift, const at::Tensor& rows) {
  const int64_t n = X.size(0), d = X.size(1), k = y2d.size(1);
  const int64_t blocks = std::min(cuda::ceil_div(n * (d + k + 1), kThreads), cuda::kMaxGridBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, X.scalar_type(), "fused_linreg.linreg_gram", [&] {
    augmented_rows_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        X.const_data_ptr<scalar_t>(), y2d.const_data_ptr<scalar_t>(),
        sample_weight ? sample_weight->const_data_ptr<double>() : nullptr, x_shift.const_data_ptr<double>(),
        y_shift.const_data_ptr<double>(), n, d, k, rows.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

void DeviceKernels<c10::kCUDA>::gram_rows(const at::Tensor& X, const at::Tensor& y2d,
                                          const std::optional<at::Tensor>& sample_weight, const at::Tensor& x_shift,
                                          const at::Tensor& y_shift, const at::Tensor& gram) {
  constexpr int64_t kBlockBytes = int64_t{64} << 20;  // a few large GEMMs, a bounded buffer
  const int64_t n = X.size(0), m = gram.size(0);
  const int64_t block = std::clamp<int64_t>(kBlockBytes / (m * static_cast<int64_t>(sizeof(double))), 1, n);
  const at::Tensor rows = at::empty({block, m}, X.options().dtype(at::kDouble));
  for (int64_t start = 0; start < n; start += block) {
    const int64_t stop = std::min(start + block, n);
    const at::Tensor part = rows.narrow(0, 0, stop - start);
    const std::optional<at::Tensor> weight_part =
        sample_weight ? std::optional<at::Tensor>(sample_weight->slice(0, start, stop)) : std::nullopt;
    write_rows(X.slice(0, start, stop), y2d.slice(0, start, stop), weight_part, x_shift, y_shift, part);
    gram.addmm_(part.t(), part);
  }
}

}  // namespace fused_linreg
