// CPU kernels of linear for skinny weights (front: linear.cpp): forward, grad
// of the input, and grad of weight and bias from one pass over x.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/rows.h"
#include "kernels.h"
#include "linear_shapes.h"
#include "param_sums.h"

namespace fused_linreg {
namespace {

using cpu::ceil_div;

// Rows per parallel task: enough multiply-adds to amortise the task's cost.
int64_t row_grain(int64_t work_per_row) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(work_per_row, 1)); }

template <typename scalar_t>
void linear_forward_skinny(const at::Tensor& x2d, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const at::Tensor& y2d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = weight.size(0);
  const at::Tensor w_acc = weight.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const at::Tensor b_acc = bias.has_value() ? bias->to(c10::CppTypeToScalarType<acc_t>::value).contiguous()
                                            : at::zeros({out}, w_acc.options());
  const scalar_t* x = x2d.const_data_ptr<scalar_t>();
  const acc_t* w = w_acc.const_data_ptr<acc_t>();
  const acc_t* b = b_acc.const_data_ptr<acc_t>();
  scalar_t* y = y2d.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(in * out), [&](int64_t begin, int64_t end) {
    acc_t dots[kSkinnyMaxOut];
    for (int64_t i = begin; i < end; ++i) {
      cpu::dot_all_rows(x + i * in, w, in, out, dots);
      for (int64_t j = 0; j < out; ++j) y[i * out + j] = static_cast<scalar_t>(dots[j] + b[j]);
    }
  });
}

template <typename scalar_t>
void linear_backward_input_skinny(const at::Tensor& grad2d, const at::Tensor& weight, const at::Tensor& grad_x2d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = grad2d.size(0), out = weight.size(0), in = weight.size(1);
  const at::Tensor w_acc = weight.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
  const scalar_t* g = grad2d.const_data_ptr<scalar_t>();
  const acc_t* w = w_acc.const_data_ptr<acc_t>();
  const acc_t* w_rows[kSkinnyMaxOut];
  for (int64_t j = 0; j < out; ++j) w_rows[j] = w + j * in;
  scalar_t* gx = grad_x2d.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(in * out), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row(static_cast<size_t>(in));
    acc_t g_row[kSkinnyMaxOut];
    for (int64_t i = begin; i < end; ++i) {
      std::fill(row.begin(), row.end(), acc_t(0));
      for (int64_t j = 0; j < out; ++j) g_row[j] = static_cast<acc_t>(g[i * out + j]);
      cpu::add_scaled_rows(w_rows, g_row, out, in, row.data());
      cpu::store_row(row.data(), in, gx + i * in);
    }
  });
}

template <typename scalar_t>
void linear_backward_params_skinny(const at::Tensor& grad2d, const at::Tensor& x2d, const at::Tensor& grad_weight,
                                   const at::Tensor& grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  using cpu::kRowBlock;
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = grad2d.size(1);
  const ParamSums layout{in, out};
  const int64_t row_stride = layout.per_output();
  const int64_t chunks = cpu::row_chunks(rows, out * row_stride);
  const int64_t rows_per_chunk = ceil_div(rows, chunks);
  at::Tensor partials = at::zeros({chunks, out, row_stride}, x2d.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const scalar_t* x = x2d.const_data_ptr<scalar_t>();
  const scalar_t* g = grad2d.const_data_ptr<scalar_t>();
  acc_t* part = partials.mutable_data_ptr<acc_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    const scalar_t* block_rows[kRowBlock];
    acc_t g_block[kSkinnyMaxOut][kRowBlock];  // g_block[j][i]: grad of output j in row i of the block
    acc_t bias_sums[kSkinnyMaxOut];           // advanced a row at a time for all outputs: k short chains of adds
    for (int64_t c = chunk_begin; c < chunk_end; ++c) {
      acc_t* chunk_part = part + c * out * row_stride;
      const int64_t row_end = std::min(rows, (c + 1) * rows_per_chunk);
      std::fill(bias_sums, bias_sums + out, acc_t(0));
      for (int64_t first = c * rows_per_chunk; first < row_end; first += kRowBlock) {
        const int64_t count = std::min(kRowBlock, row_end - first);
        for (int64_t i = 0; i < count; ++i) {
          block_rows[i] = x + (first + i) * in;
          for (int64_t j = 0; j < out; ++j) {
            g_block[j][i] = static_cast<acc_t>(g[(first + i) * out + j]);
            bias_sums[j] += g_block[j][i];
          }
        }
        cpu::add_outer_products(block_rows, &g_block[0][0], count, in, out, chunk_part, row_stride);
      }
      for (int64_t j = 0; j < out; ++j) chunk_part[j * row_stride + in] = bias_sums[j];
    }
  });
  const int64_t sums = layout.count();
  scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
  scalar_t* gb = grad_bias.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, sums, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      acc_t total = 0;
      for (int64_t c = 0; c < chunks; ++c) total += part[c * sums + e];
      const int64_t j = layout.output_of(e);
      (layout.is_bias(e) ? gb[j] : gw[j * in + layout.column_of(e)]) = static_cast<scalar_t>(total);
    }
  });
}

}  // namespace

void CPU_CAPABILITY::CpuKernels::linear_forward(const at::Tensor& x2d, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias, const at::Tensor& y2d) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x2d.scalar_type(), "fused_linreg.linear", [&] {
    linear_forward_skinny<scalar_t>(x2d, weight, bias, y2d);
  });
}

void CPU_CAPABILITY::CpuKernels::linear_backward_input(const at::Tensor& grad2d, const at::Tensor& weight,
                                                     const at::Tensor& grad_x2d) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad2d.scalar_type(), "fused_linreg.linear_backward_input",
                                  [&] { linear_backward_input_skinny<scalar_t>(grad2d, weight, grad_x2d); });
}

void CPU_CAPABILITY::CpuKernels::linear_backward_params(const at::Tensor& grad2d, const at::Tensor& x2d,
                                                      const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x2d.scalar_type(), "fused_linreg.linear_backward_params",
                                  [&] { linear_backward_params_skinny<scalar_t>(grad2d, x2d, grad_weight, grad_bias); });
}

}  // namespace fused_linreg
