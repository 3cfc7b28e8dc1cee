// CUDA kernels of linear for skinny weights (front: linear.cpp; at most
// kCudaSkinnyMaxOut outputs and, for the forward and input-grad kernels, which
// read the weight through L1 once per row, kCudaMaxOwnKernelWeightBytes of
// weight: linear_shapes.h): forward, grad of the input, and grad of weight and
// bias from one pass over x.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

#include "kernel_utils.cuh"
#include "kernels.h"
#include "linear_shapes.h"
#include "param_sums.h"

namespace fused_linreg {
namespace {

using namespace cuda;  // the kernel helpers of kernel_utils.cuh

constexpr int kThreads = 256;
// Row kernels give each lane about this many 16-byte packs of a row.
constexpr int kPacksPerLane = 4;

// Calls f with std::integral_constant<int, N>, N = 1 for one output and 4 for
// up to kCudaSkinnyMaxOut: kernels keep N accumulators per thread in registers.
template <typename F>
void dispatch_max_out(int64_t out, F&& f) {
  if (out <= 1) {
    f(std::integral_constant<int, 1>{});
  } else {
    f(std::integral_constant<int, kCudaSkinnyMaxOut>{});
  }
}

// Lanes that share one row of `in` elements: a thread per row for short rows
// (the book's in = 2), up to a warp per row for long ones. It depends on the
// shape only, so the summation order does not change with alignment.
template <typename scalar_t>
int lanes_per_row(int64_t in) {
  return cuda::pow2_at_least(ceil_div(ceil_div(in, kVec16<scalar_t>), kPacksPerLane), kWarpSize);
}

// ---------------------------------------------------------------- forward

// y[row, o] = dot(x[row], weight[o]) + bias[o]. A group of lanes_per_row lanes
// takes a row: lane l reads packs l, l + lanes_per_row, ... of it (one pass over
// x), then the group adds its lanes with a fixed butterfly.
template <typename scalar_t, int kMaxOut, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    linear_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                          const scalar_t* __restrict__ bias, scalar_t* __restrict__ y, int64_t rows, int64_t in,
                          int out, int lanes_per_row) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const int lane = threadIdx.x % lanes_per_row;
  const int rows_per_warp = kWarpSize / lanes_per_row;
  const int64_t rows_per_block = blockDim.x / lanes_per_row;
  const int64_t packs_per_row = ceil_div(in, kVec);
  // The loop runs per warp, not per row, so that all lanes reach the shuffles.
  const int64_t warp_row = blockIdx.x * rows_per_block + (threadIdx.x / kWarpSize) * rows_per_warp;
  for (int64_t first = warp_row; first < rows; first += rows_per_block * gridDim.x) {
    const int64_t row = first + (threadIdx.x % kWarpSize) / lanes_per_row;
    opmath_t acc[kMaxOut];
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) acc[o] = 0;
    if (row < rows) {
      const scalar_t* x_row = x + row * in;
      for (int64_t pack = lane; pack < packs_per_row; pack += lanes_per_row) {
        const int64_t col = pack * kVec;
        const Pack<scalar_t, kVec> xv = load_pack<kVec, kAligned>(x_row + col, in - col);
#pragma unroll
        for (int o = 0; o < kMaxOut; ++o) {
          if (o < out) {
            const Pack<scalar_t, kVec> wv = load_pack<kVec, kAligned>(weight + o * in + col, in - col);
#pragma unroll
            for (int j = 0; j < kVec; ++j) {
              acc[o] += static_cast<opmath_t>(xv.v[j]) * static_cast<opmath_t>(wv.v[j]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) {
      if (o < out) acc[o] = cuda::group_sum(acc[o], lanes_per_row);
    }
    if (row < rows) {
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
        if (o < out && o % lanes_per_row == lane) {
          const opmath_t value = bias != nullptr ? acc[o] + static_cast<opmath_t>(bias[o]) : acc[o];
          y[row * out + o] = static_cast<scalar_t>(value);
        }
      }
    }
  }
}

template <typename scalar_t>
void launch_linear_forward(const at::Tensor& x2d, const at::Tensor& weight, const scalar_t* bias, const at::Tensor& y2d) {
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = weight.size(0);
  const scalar_t* x = x2d.const_data_ptr<scalar_t>();
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  const bool aligned = in % kVec16<scalar_t> == 0 && cuda::is_aligned(x, 16) && cuda::is_aligned(w, 16);
  const int lanes = lanes_per_row<scalar_t>(in);
  const int64_t blocks = std::min(ceil_div(rows, kThreads / lanes), cuda::kMaxGridBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_max_out(out, [&](auto max_out) {
    cuda::dispatch_bool(aligned, [&](auto aligned_flag) {
      linear_forward_kernel<scalar_t, decltype(max_out)::value, decltype(aligned_flag)::value>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, w, bias, y2d.mutable_data_ptr<scalar_t>(), rows,
                                                                   in, static_cast<int>(out), lanes);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// ------------------------------------------------------ grad of the input

// grad_x[row, k] = sum over o of grad_out[row, o] * weight[o, k], o in order.
// Lanes of a row group write adjacent packs of the row.
template <typename scalar_t, int kMaxOut, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    linear_backward_input_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ weight,
                                 scalar_t* __restrict__ grad_x, int64_t rows, int64_t in, int out,
                                 int lanes_per_row) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const int lane = threadIdx.x % lanes_per_row;
  const int64_t rows_per_block = blockDim.x / lanes_per_row;
  const int64_t packs_per_row = ceil_div(in, kVec);
  for (int64_t row = blockIdx.x * rows_per_block + threadIdx.x / lanes_per_row; row < rows;
       row += rows_per_block * gridDim.x) {
    opmath_t g[kMaxOut];
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) g[o] = o < out ? static_cast<opmath_t>(grad_out[row * out + o]) : opmath_t(0);
    for (int64_t pack = lane; pack < packs_per_row; pack += lanes_per_row) {
      const int64_t col = pack * kVec;
      opmath_t acc[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[j] = 0;
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
        if (o < out) {
          const Pack<scalar_t, kVec> wv = load_pack<kVec, kAligned>(weight + o * in + col, in - col);
#pragma unroll
          for (int j = 0; j < kVec; ++j) acc[j] += g[o] * static_cast<opmath_t>(wv.v[j]);
        }
      }
      Pack<scalar_t, kVec> result;
#pragma unroll
      for (int j = 0; j < kVec; ++j) result.v[j] = static_cast<scalar_t>(acc[j]);
      store_pack<kVec, kAligned>(grad_x + row * in + col, result, in - col);
    }
  }
}

template <typename scalar_t>
void launch_linear_backward_input(const at::Tensor& g2d, const at::Tensor& weight, const at::Tensor& grad_x2d) {
  const int64_t rows = g2d.size(0), out = weight.size(0), in = weight.size(1);
  const scalar_t* w = weight.const_data_ptr<scalar_t>();
  scalar_t* grad_x = grad_x2d.mutable_data_ptr<scalar_t>();
  const bool aligned = in % kVec16<scalar_t> == 0 && cuda::is_aligned(w, 16) && cuda::is_aligned(grad_x, 16);
  const int lanes = lanes_per_row<scalar_t>(in);
  const int64_t blocks = std::min(ceil_div(rows, kThreads / lanes), cuda::kMaxGridBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_max_out(out, [&](auto max_out) {
    cuda::dispatch_bool(aligned, [&](auto aligned_flag) {
      linear_backward_input_kernel<scalar_t, decltype(max_out)::value, decltype(aligned_flag)::value>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g2d.const_data_ptr<scalar_t>(), w, grad_x, rows,
                                                                   in, static_cast<int>(out), lanes);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

// ------------------------------------------- grads of weight and bias

// Writes each final sum (param_sums.h numbering) to its gradient.
template <typename scalar_t>
struct StoreParamGrads {
  scalar_t* grad_weight;
  scalar_t* grad_bias;
  ParamSums sums;

  template <typename acc_t>
  __device__ void operator()(int64_t e, acc_t total) const {
    const int64_t o = sums.output_of(e);
    (sums.is_bias(e) ? grad_bias[o] : grad_weight[o * sums.features + sums.column_of(e)]) =
        static_cast<scalar_t>(total);
  }
};

// Rows whose loads each thread of the param-grad kernel issues before using
// them: one row at a time left the kernel at half the memory bandwidth.
constexpr int kRowsInFlight = 4;

// Stage one: block (bx, by) takes column slots [bx * col_threads, ...) of x (a
// 16-byte pack of kCols columns each) and rows [by * rows_per_block, ...).
// Thread (row_lane, slot) adds grad_out[r, o] * x[r, cols] and grad_out[r, o]
// over the rows r = row_lane, row_lane + row_lanes, ... of the range, in that
// order, loading kRowsInFlight rows at a time. The row lanes are then added in
// a fixed order (a butterfly inside each warp, then warps in order). Every
// thread sums the bias too, so that one pass serves any number of column
// blocks; column slot 0 writes it. The block's totals go to its row of
// `partials`, or straight to the grads when there is one row block.
template <typename scalar_t, int kMaxOut, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    linear_param_grads_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x, int64_t rows,
                              int64_t in, int out, int col_threads, int64_t rows_per_block,
                              at::opmath_type<scalar_t>* __restrict__ partials, StoreParamGrads<scalar_t> store) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kCols = kVec16<scalar_t>;
  __shared__ opmath_t group_totals[kThreads][kCols + 1];

  const int slot = threadIdx.x % col_threads;
  const int row_lane = threadIdx.x / col_threads;
  const int row_lanes = blockDim.x / col_threads;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * col_threads + slot) * kCols;
  const int64_t row_begin = blockIdx.y * rows_per_block;
  const int64_t row_end = std::min(rows, row_begin + rows_per_block);

  opmath_t acc[kMaxOut][kCols + 1];  // [o][kCols] is the bias sum
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
#pragma unroll
    for (int j = 0; j <= kCols; ++j) acc[o][j] = 0;
  }
  const int64_t columns_here = col < in ? in - col : 0;
  const int64_t rows_per_step = static_cast<int64_t>(row_lanes) * kRowsInFlight;
  for (int64_t first = row_begin + row_lane; first < row_end; first += rows_per_step) {
    // Rows past the range load as zeros and add exact zeros.
    Pack<scalar_t, kCols> xv[kRowsInFlight];
    opmath_t g[kRowsInFlight][kMaxOut];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
      const int64_t r = first + static_cast<int64_t>(u) * row_lanes;
      const bool in_range = r < row_end;
      xv[u] = load_pack<kCols, kAligned>(in_range ? x + r * in + col : x, in_range ? columns_here : 0);
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
        g[u][o] = in_range && o < out ? static_cast<opmath_t>(grad_out[r * out + o]) : opmath_t(0);
      }
    }
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u) {
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
#pragma unroll
        for (int j = 0; j < kCols; ++j) acc[o][j] += g[u][o] * static_cast<opmath_t>(xv[u].v[j]);
        acc[o][kCols] += g[u][o];
      }
    }
  }

  // Row lanes of one slot inside a warp are `col_threads` lanes apart.
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
    if (o < out) {
#pragma unroll
      for (int j = 0; j <= kCols; ++j) {
        for (int offset = kWarpSize / 2; offset >= col_threads; offset /= 2) {
          acc[o][j] += __shfl_xor_sync(cuda::kFullWarpMask, acc[o][j], offset);
        }
      }
    }
  }
  // After the butterfly, group `group` (a warp, or a row lane when a row lane
  // spans whole warps) holds one total per slot.
  const int group_span = col_threads > kWarpSize ? col_threads : kWarpSize;
  const int group = threadIdx.x / group_span;
  const int groups = blockDim.x / group_span;
  const bool holds_group_total = threadIdx.x % group_span < col_threads;
  const int64_t num_sums = static_cast<int64_t>(out) * (in + 1);
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
    if (o < out) {
      if (holds_group_total) {
#pragma unroll
        for (int j = 0; j <= kCols; ++j) group_totals[group * col_threads + slot][j] = acc[o][j];
      }
      __syncthreads();
      if (threadIdx.x < col_threads) {
        opmath_t total[kCols + 1];
#pragma unroll
        for (int j = 0; j <= kCols; ++j) total[j] = 0;
        for (int g = 0; g < groups; ++g) {
#pragma unroll
          for (int j = 0; j <= kCols; ++j) total[j] += group_totals[g * col_threads + slot][j];
        }
        const auto emit = [&](int64_t sum_index, opmath_t value) {
          if (partials != nullptr) {
            partials[blockIdx.y * num_sums + sum_index] = value;
          } else {
            store(sum_index, value);
          }
        };
        const int64_t first_sum = o * (in + 1);
#pragma unroll
        for (int j = 0; j < kCols; ++j) {
          if (col + j < in) emit(first_sum + col + j, total[j]);
        }
        if (col == 0) emit(first_sum + in, total[kCols]);
      }
      __syncthreads();
    }
  }
}

// Row blocks of the param-grad kernel: a function of the shape only (so the
// summation order is too). Enough blocks to fill the GPU, at least
// kMinRowsPerBlock rows each, and partials that stay small beside x (at most
// an eighth of it, or 4M sums).
int64_t param_grad_row_blocks(int64_t rows, int64_t in, int64_t num_sums, int64_t col_blocks) {
  constexpr int64_t kTargetBlocks = 1024;
  constexpr int64_t kMinRowsPerBlock = 256;
  constexpr int64_t kPartialSumsAlwaysAllowed = int64_t{1} << 22;
  const int64_t by_rows = ceil_div(rows, kMinRowsPerBlock);
  const int64_t by_occupancy = kTargetBlocks / col_blocks;
  const int64_t by_memory = std::max(kPartialSumsAlwaysAllowed, rows * in / 8) / num_sums;
  return std::max<int64_t>(1, std::min({by_rows, by_occupancy, by_memory}));
}

template <typename scalar_t>
void launch_linear_param_grads(const at::Tensor& g2d, const at::Tensor& x2d, const at::Tensor& grad_weight,
                               const at::Tensor& grad_bias) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = g2d.size(1);
  const scalar_t* x = x2d.const_data_ptr<scalar_t>();
  const scalar_t* g = g2d.const_data_ptr<scalar_t>();
  const StoreParamGrads<scalar_t> store{grad_weight.mutable_data_ptr<scalar_t>(),
                                        grad_bias.mutable_data_ptr<scalar_t>(), ParamSums{in, out}};
  const int64_t num_sums = store.sums.count();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_max_out(out, [&](auto max_out) {
    constexpr int kMaxOut = decltype(max_out)::value;
    constexpr int kCols = kVec16<scalar_t>;
    // At least one slot, so that the bias is summed when in == 0.
    const int64_t slots = std::max<int64_t>(1, ceil_div(in, kCols));
    const int col_threads = cuda::pow2_at_least(slots, kThreads);
    const int64_t col_blocks = ceil_div(slots, col_threads);
    const int64_t rows_per_block = ceil_div(rows, param_grad_row_blocks(rows, in, num_sums, col_blocks));
    const int64_t row_blocks = ceil_div(rows, rows_per_block);
    TORCH_CHECK(col_blocks <= std::numeric_limits<int32_t>::max(),
                "fused_linreg.linear_backward_params: x has too many features (", in, ")");
    at::Tensor partials;
    opmath_t* partials_ptr = nullptr;
    if (row_blocks > 1) {
      partials = at::empty({row_blocks, num_sums}, x2d.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
      partials_ptr = partials.mutable_data_ptr<opmath_t>();
    }
    const bool aligned = in % kCols == 0 && cuda::is_aligned(x, sizeof(scalar_t) * kCols);
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
    cuda::dispatch_bool(aligned, [&](auto aligned_flag) {
      linear_param_grads_kernel<scalar_t, kMaxOut, decltype(aligned_flag)::value><<<grid, kThreads, 0, stream>>>(
          g, x, rows, in, static_cast<int>(out), col_threads, rows_per_block, partials_ptr, store);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (row_blocks > 1) cuda::launch_sum_partials(partials_ptr, row_blocks, num_sums, store, stream);
  });
}

}  // namespace

void DeviceKernels<c10::kCUDA>::linear_forward(const at::Tensor& x2d, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias, const at::Tensor& y2d) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x2d.scalar_type(), "fused_linreg.linear", [&] {
    launch_linear_forward<scalar_t>(x2d, weight, bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr, y2d);
  });
}

void DeviceKernels<c10::kCUDA>::linear_backward_input(const at::Tensor& grad2d, const at::Tensor& weight,
                                                      const at::Tensor& grad_x2d) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad2d.scalar_type(), "fused_linreg.linear_backward_input",
                                  [&] { launch_linear_backward_input<scalar_t>(grad2d, weight, grad_x2d); });
}

void DeviceKernels<c10::kCUDA>::linear_backward_params(const at::Tensor& grad2d, const at::Tensor& x2d,
                                                       const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x2d.scalar_type(), "fused_linreg.linear_backward_params",
                                  [&] { launch_linear_param_grads<scalar_t>(grad2d, x2d, grad_weight, grad_bias); });
}

}  // namespace fused_linreg
