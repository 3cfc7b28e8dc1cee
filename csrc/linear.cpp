// linear: y = x @ weight.T + bias, its input gradient, and the weight and bias
// gradients from one pass over x. Skinny weights (few outputs: regression
// heads, linear_shapes.h) go to our kernels, bound by reading x once; wider
// layers are GEMMs, where the vendor BLAS (MKL/oneDNN, cuBLAS) through
// at::addmm / at::mm is at the limit. One front for both devices (checks,
// shapes, the GEMM and empty cases, contiguous inputs, outputs); the kernels
// are in cpu/linear.cpp and cuda/linear.cu.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "kernels.h"
#include "linear_shapes.h"

namespace fused_linreg {
namespace {

// x (..., in), weight (out, in), bias (out).
void check_linear_args(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear";
  check_float_tensor(x, op, "x");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(weight, x, op, "weight", "x");
  TORCH_CHECK(x.dim() >= 1, "fused_linreg.linear: x must have at least 1 dimension, got a 0-dim tensor");
  TORCH_CHECK(weight.dim() == 2, "fused_linreg.linear: weight must be 2-D (out_features, in_features), got shape ",
              weight.sizes());
  TORCH_CHECK(x.size(-1) == weight.size(1), "fused_linreg.linear: x has ", x.size(-1),
              " features in its last dimension (shape ", x.sizes(), ") but weight expects ", weight.size(1),
              " (shape ", weight.sizes(), ")");
  if (bias.has_value() && bias->defined()) {
    check_float_tensor(*bias, op, "bias");
    check_same_dtype_device(*bias, x, op, "bias", "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "fused_linreg.linear: bias must have shape (",
                weight.size(0), ",), got ", bias->sizes());
  }
}

void check_linear_backward_input_args(const at::Tensor& grad_out, const at::Tensor& weight) {
  constexpr const char* op = "linear_backward_input";
  check_float_tensor(grad_out, op, "grad_out");
  check_float_tensor(weight, op, "weight");
  check_same_dtype_device(weight, grad_out, op, "weight", "grad_out");
  TORCH_CHECK(weight.dim() == 2, "fused_linreg.linear_backward_input: weight must be 2-D, got shape ", weight.sizes());
  TORCH_CHECK(grad_out.dim() >= 1 && grad_out.size(-1) == weight.size(0),
              "fused_linreg.linear_backward_input: grad_out must have shape (..., ", weight.size(0), "), got ",
              grad_out.sizes());
}

void check_linear_backward_params_args(const at::Tensor& grad_out, const at::Tensor& x) {
  constexpr const char* op = "linear_backward_params";
  check_float_tensor(grad_out, op, "grad_out");
  check_float_tensor(x, op, "x");
  check_same_dtype_device(x, grad_out, op, "x", "grad_out");
  TORCH_CHECK(x.dim() >= 1 && grad_out.dim() == x.dim() &&
                  grad_out.sizes().slice(0, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1),
              "fused_linreg.linear_backward_params: grad_out (shape ", grad_out.sizes(), ") and x (shape ", x.sizes(),
              ") must share their leading dimensions");
}

template <c10::DeviceType kDevice>
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_args(x, weight, bias);
  const c10::OptionalDeviceGuard device_guard(x.device());
  const std::optional<at::Tensor> b =
      (bias.has_value() && bias->defined()) ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  const at::Tensor x2d = rows_of(x);
  const int64_t out = weight.size(0);
  if (!own_kernels_take_weight(weight)) {
    // A GEMM, with the bias folded in by addmm.
    at::Tensor y2d = b.has_value() ? at::addmm(*b, x2d, weight.t()) : at::mm(x2d, weight.t());
    return y2d.view(output_shape(x, out));
  }
  at::Tensor y2d = at::empty({x2d.size(0), out}, x2d.options());
  if (y2d.numel() > 0) DeviceKernels<kDevice>::linear_forward(x2d, weight.contiguous(), b, y2d);
  return y2d.view(output_shape(x, out));
}

template <c10::DeviceType kDevice>
at::Tensor linear_backward_input(const at::Tensor& grad_out, const at::Tensor& weight) {
  check_linear_backward_input_args(grad_out, weight);
  const c10::OptionalDeviceGuard device_guard(grad_out.device());
  const at::Tensor g2d = rows_of(grad_out);
  const int64_t out = weight.size(0), in = weight.size(1);
  if (!own_kernels_take_weight(weight)) {
    return at::mm(g2d, weight).view(output_shape(grad_out, in));  // a GEMM
  }
  if (out == 0) return at::zeros({g2d.size(0), in}, g2d.options()).view(output_shape(grad_out, in));
  at::Tensor grad_x2d = at::empty({g2d.size(0), in}, g2d.options());
  if (grad_x2d.numel() > 0) DeviceKernels<kDevice>::linear_backward_input(g2d, weight.contiguous(), grad_x2d);
  return grad_x2d.view(output_shape(grad_out, in));
}

// The weight and bias gradients of a wide layer (a GEMM) on the CPU, summed
// over the rows in an order that depends on the row count only. A BLAS may
// split that sum across its threads (torch 2.15's MKL/oneDNN does: the weight
// gradient of a 64-output layer differed between 1 and 2 threads), so here the
// rows are cut into a fixed number of chunks, each chunk's products computed by
// one thread (at least two chunks, so that with two or more threads they run
// inside a parallel region, where the BLAS stays on its calling thread), and
// the chunks' partial sums added in order. Half types accumulate in float.
std::tuple<at::Tensor, at::Tensor> cpu_gemm_params_grad(const at::Tensor& g2d, const at::Tensor& x2d) {
  constexpr int64_t kChunkRows = 4096;
  constexpr int64_t kMaxChunks = 32;
  constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;
  const int64_t rows = g2d.size(0), out = g2d.size(1), in = x2d.size(1);
  const at::ScalarType acc = at::toOpMathType(x2d.scalar_type());
  const int64_t partial_bytes = out * (in + 1) * static_cast<int64_t>(c10::elementSize(acc));
  const int64_t chunks = std::max<int64_t>(
      2, std::min({(rows + kChunkRows - 1) / kChunkRows, kMaxChunks, kMaxPartialBytes / std::max<int64_t>(partial_bytes, 1)}));
  const at::Tensor partial_weight = at::empty({chunks, out, in}, x2d.options().dtype(acc));
  const at::Tensor partial_bias = at::empty({chunks, out}, x2d.options().dtype(acc));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t first = rows * chunk / chunks, last = rows * (chunk + 1) / chunks;
      const at::Tensor g = g2d.slice(0, first, last).to(acc), x = x2d.slice(0, first, last).to(acc);
      at::Tensor weight_part = partial_weight[chunk], bias_part = partial_bias[chunk];
      at::mm_out(weight_part, g.t(), x);
      at::sum_out(bias_part, g, 0);
    }
  });
  at::Tensor grad_weight = partial_weight[0].clone(), grad_bias = partial_bias[0].clone();
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    grad_weight.add_(partial_weight[chunk]);
    grad_bias.add_(partial_bias[chunk]);
  }
  return {grad_weight.to(x2d.scalar_type()), grad_bias.to(x2d.scalar_type())};
}

template <c10::DeviceType kDevice>
std::tuple<at::Tensor, at::Tensor> linear_backward_params(const at::Tensor& grad_out, const at::Tensor& x) {
  check_linear_backward_params_args(grad_out, x);
  const c10::OptionalDeviceGuard device_guard(x.device());
  const at::Tensor g2d = rows_of(grad_out);
  const at::Tensor x2d = rows_of(x);
  const int64_t rows = x2d.size(0), out = g2d.size(1), in = x2d.size(1);
  if (out > skinny_max_out(x.device())) {
    if constexpr (kDevice == c10::kCPU) return cpu_gemm_params_grad(g2d, x2d);
    return {at::mm(g2d.t(), x2d), g2d.sum(0)};  // a GEMM and a column sum
  }
  if (rows == 0 || out == 0) return {at::zeros({out, in}, x2d.options()), at::zeros({out}, x2d.options())};
  at::Tensor grad_weight = at::empty({out, in}, x2d.options());
  at::Tensor grad_bias = at::empty({out}, x2d.options());
  DeviceKernels<kDevice>::linear_backward_params(g2d, x2d, grad_weight, grad_bias);
  return {grad_weight, grad_bias};
}

template <c10::DeviceType kDevice>
void register_linear(torch::Library& m) {
  m.impl("linear", &linear<kDevice>);
  m.impl("linear_backward_input", &linear_backward_input<kDevice>);
  m.impl("linear_backward_params", &linear_backward_params<kDevice>);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) { register_linear<c10::kCPU>(m); }

#ifdef FUSED_LINREG_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_linreg, CUDA, m) { register_linear<c10::kCUDA>(m); }
#endif

}  // namespace fused_linreg
