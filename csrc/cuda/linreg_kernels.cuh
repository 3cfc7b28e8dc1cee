// The kernels of linreg_grad, linreg_step_ and linreg_epoch_ (see linreg.cu
// for the scheme) and their per-dtype launchers. linreg_<dtype>.cu instantiate
// the launchers once per dtype, so the dtypes compile in parallel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernel_utils.cuh"
#include "linreg_launch.h"
#include "linear_shapes.h"
#include "param_sums.h"
#include "sgd_math.h"

namespace fused_linreg::linreg_cuda {

using cuda::ceil_div;
using cuda::kVec16;
using cuda::kWarpSize;
using cuda::load_pack;
using cuda::Pack;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int64_t kMinRowsPerBlock = 256;
constexpr int64_t kTargetBlocks = 1024;

// How one lane covers a row: kPacks packs of kPackWidth elements, holding
// kMaxOut * kCols accumulators in registers (at most 64 registers, and at most
// 128 bytes per output so that the cross-warp buffer fits in shared memory).
//
// A wide tile gives each lane many packs: rows up to 32 * kCols features (1024
// floats for one output) fit, and the weights are re-read from cache for each
// row. A narrow tile gives each lane one pack, so a row spreads over up to 32
// lanes and one warp load covers whole rows; the lane then has registers to
// spare for its weights and for more rows in flight, which a memory-bound
// step needs (kRowsPerTrip rows loaded before any is used). Narrow tiles serve
// rows of up to 32 packs (128 floats) with at most 4 outputs.
template <typename scalar_t, int kMaxOut, bool kNarrow>
struct Tile {
  using scalar = scalar_t;
  using opmath_t = at::opmath_type<scalar_t>;
  static constexpr int kOutputs = kMaxOut;
  static constexpr int kRegisterBudget = 64 / (kMaxOut * static_cast<int>(sizeof(opmath_t) / 4));
  static constexpr int kSharedBudget = 128 / static_cast<int>(sizeof(opmath_t));
  static constexpr int kColsBudget = kRegisterBudget < kSharedBudget ? kRegisterBudget : kSharedBudget;
  static constexpr int kPackWidth = kVec16<scalar_t> < kColsBudget ? kVec16<scalar_t> : kColsBudget;
  static constexpr int kPacks = kNarrow ? 1 : kColsBudget / kPackWidth;
  static constexpr int kCols = kPackWidth * kPacks;
  static constexpr int64_t kMaxFeatures = int64_t{kWarpSize} * kCols;
  static constexpr int kRowsPerTrip = !kNarrow ? 2 : kMaxOut == 1 ? 8 : 4;
  static constexpr bool kWeightsInRegisters = kNarrow;
};

// Calls f with std::integral_constant<int, N>, N the smallest of 1, 4, 16 that
// holds k outputs.
template <typename F>
void dispatch_outputs(int64_t k, F&& f) {
  if (k <= 1) {
    f(std::integral_constant<int, 1>{});
  } else if (k <= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, kSkinnyMaxOut>{});
  }
}

// Calls f with the Tile for d features and k outputs: narrow where it fits.
// A function of the shape and dtype only, so a step and an epoch of the same
// problem run the same code.
template <typename scalar_t, typename F>
void dispatch_tile(int64_t d, int64_t k, F&& f) {
  dispatch_outputs(k, [&](auto max_out) {
    constexpr int kMaxOut = decltype(max_out)::value;
    using Narrow = Tile<scalar_t, kMaxOut, true>;
    if constexpr (kMaxOut <= 4) {
      if (d <= Narrow::kMaxFeatures) {
        f(Narrow{});
        return;
      }
    }
    f(Tile<scalar_t, kMaxOut, false>{});
  });
}

template <typename scalar_t>
struct Problem {
  const scalar_t* X;
  const scalar_t* y;
  const int64_t* rows;  // the minibatch's row numbers, or nullptr for rows 0..n-1
  // Not __restrict__ or const-cached: the epoch kernel updates them between steps.
  const scalar_t* weight;
  const scalar_t* bias;  // nullptr without a bias
  int64_t d;
  int64_t k;
  C10_HOST_DEVICE int64_t num_sums() const { return ParamSums{d, k}.count_with_loss(); }
};

// Takes each final sum (divided by n) to its place: the loss, then either the
// gradients (linreg_grad: grad_weight is set) or the SGD update of the
// parameter element (steps). One type for both keeps the kernel count, and the
// build time, down; the branch is uniform and runs once per sum.
template <typename scalar_t>
struct FinishSums {
  using opmath_t = at::opmath_type<scalar_t>;
  scalar_t* loss = nullptr;
  scalar_t* grad_weight = nullptr;
  scalar_t* grad_bias = nullptr;
  scalar_t* weight = nullptr;
  scalar_t* bias = nullptr;  // nullptr without a bias
  scalar_t* weight_momentum = nullptr;  // nullptr without momentum
  scalar_t* bias_momentum = nullptr;
  ParamSums sums{};
  opmath_t inv_n = 1;
  bool first_step = false;
  SgdScalars<opmath_t> sgd{};

  __device__ void update(scalar_t* param, scalar_t* buf, int64_t i, opmath_t grad) const {
    opmath_t b = (buf != nullptr && !first_step) ? static_cast<opmath_t>(buf[i]) : opmath_t(0);
    param[i] = static_cast<scalar_t>(sgd_update(static_cast<opmath_t>(param[i]), grad, b, first_step, sgd));
    if (buf != nullptr) buf[i] = static_cast<scalar_t>(b);
  }

  __device__ void operator()(int64_t e, opmath_t total) const {
    const opmath_t value = total * inv_n;
    if (e == sums.loss()) {
      *loss = static_cast<scalar_t>(value);
      return;
    }
    const int64_t o = sums.output_of(e), c = sums.column_of(e);
    if (grad_weight != nullptr) {
      if (c == sums.features) {
        grad_bias[o] = static_cast<scalar_t>(value);
      } else {
        grad_weight[o * sums.features + c] = static_cast<scalar_t>(value);
      }
    } else if (c == sums.features) {
      if (bias != nullptr) update(bias, bias_momentum, o, value);
    } else {
      update(weight, weight_momentum, o * sums.features + c, value);
    }
  }
};

// A block's sums, to be added over blocks by the second kernel.
template <typename opmath_t>
struct StorePartials {
  opmath_t* block_partials;
  __device__ void operator()(int64_t e, opmath_t total) const { block_partials[e] = total; }
};

template <typename opmath_t, int kCols>
struct CrossWarpBuffer {
  opmath_t values[kWarps][kWarpSize][kCols + 1];
};

// Adds value over the groups of a warp that share a lane index (lanes apart),
// with a fixed butterfly.
template <typename T>
__device__ __forceinline__ T sum_over_groups(T value, int lanes) {
  for (int offset = kWarpSize / 2; offset >= lanes; offset /= 2) {
    value += __shfl_xor_sync(cuda::kFullWarpMask, value, offset);
  }
  return value;
}

// The loss and gradient sums of rows [row_begin, row_end) of the minibatch,
// handed to emit(sum_index, total) by the threads t < lanes. Every thread of
// the block must call it; it ends with a barrier.
template <typename T, bool kAligned, typename Emit>
__device__ void block_sums(const Problem<typename T::scalar>& p, int64_t row_begin, int64_t row_end, int lanes,
                           CrossWarpBuffer<typename T::opmath_t, T::kCols>& buffer, const Emit& emit) {
  using scalar_t = typename T::scalar;
  using opmath_t = typename T::opmath_t;
  constexpr int kMaxOut = T::kOutputs;
  constexpr int kRowsPerTrip = T::kRowsPerTrip;
  constexpr int kW = T::kPackWidth;
  const int lane = threadIdx.x % lanes;
  const int group = threadIdx.x / lanes;
  const int groups = blockDim.x / lanes;
  const int64_t packs_per_row = ceil_div(p.d, kW);

  opmath_t acc[kMaxOut][T::kCols];
  opmath_t bias_acc[kMaxOut];
  opmath_t loss = 0;
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
    bias_acc[o] = 0;
#pragma unroll
    for (int c = 0; c < T::kCols; ++c) acc[o][c] = 0;
  }
  Pack<scalar_t, kW> held_weight[T::kWeightsInRegisters ? kMaxOut : 1][T::kPacks];
  if constexpr (T::kWeightsInRegisters) {
#pragma unroll
    for (int o = 0; o < kMaxOut; ++o) {
#pragma unroll
      for (int q = 0; q < T::kPacks; ++q) {
        const int64_t col = (lane + static_cast<int64_t>(q) * lanes) * kW;
        held_weight[o][q] =
            load_pack<kW, kAligned>(p.weight + o * p.d + col, o < p.k && col < p.d ? p.d - col : int64_t{0});
      }
    }
  }

  // Each trip loads kRowsPerTrip rows of X and their targets before using any,
  // so that a lane has that many rows' loads in flight; rows are still added in
  // row order. The loop runs the same trips on every thread so that all lanes
  // reach the shuffles; it stops early only where no group has a row (those
  // rows would add exact zeros).
  for (int64_t base = row_begin; base < row_end; base += kRowsPerTrip * groups) {
    bool valid[kRowsPerTrip];
    Pack<scalar_t, kW> x[kRowsPerTrip][T::kPacks];
    opmath_t target[kRowsPerTrip][kMaxOut];
#pragma unroll
    for (int u = 0; u < kRowsPerTrip; ++u) {
      if (base + u * groups >= row_end) break;
      const int64_t i = base + u * groups + group;
      valid[u] = i < row_end;
      const int64_t row = valid[u] ? (p.rows != nullptr ? p.rows[i] : i) : 0;
#pragma unroll
      for (int q = 0; q < T::kPacks; ++q) {
        const int64_t col = (lane + static_cast<int64_t>(q) * lanes) * kW;
        x[u][q] = load_pack<kW, kAligned>(p.X + row * p.d + col, valid[u] && col < p.d ? p.d - col : int64_t{0});
      }
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
        target[u][o] = valid[u] && o < p.k ? static_cast<opmath_t>(p.y[row * p.k + o]) : opmath_t(0);
      }
    }
#pragma unroll
    for (int u = 0; u < kRowsPerTrip; ++u) {
      if (base + u * groups >= row_end) break;
#pragma unroll
      for (int o = 0; o < kMaxOut; ++o) {
        if (o < p.k) {
          opmath_t dot = 0;
#pragma unroll
          for (int q = 0; q < T::kPacks; ++q) {
            Pack<scalar_t, kW> w;
            if constexpr (T::kWeightsInRegisters) {
              w = held_weight[o][q];
            } else {
              const int64_t col = (lane + static_cast<int64_t>(q) * lanes) * kW;
              w = load_pack<kW, kAligned>(p.weight + o * p.d + col, col < p.d ? p.d - col : int64_t{0});
            }
#pragma unroll
            for (int j = 0; j < kW; ++j) dot += static_cast<opmath_t>(x[u][q].v[j]) * static_cast<opmath_t>(w.v[j]);
          }
          dot = cuda::group_sum(dot, lanes);
          opmath_t r = 0;
          if (valid[u]) {
            const opmath_t b = p.bias != nullptr ? static_cast<opmath_t>(p.bias[o]) : opmath_t(0);
            r = dot + b - target[u][o];
          }
#pragma unroll
          for (int q = 0; q < T::kPacks; ++q) {
#pragma unroll
            for (int j = 0; j < kW; ++j) acc[o][q * kW + j] += r * static_cast<opmath_t>(x[u][q].v[j]);
          }
          if (lane == 0) {
            bias_acc[o] += r;
            loss += opmath_t(0.5) * r * r;
          }
        }
      }
    }
  }

  const int warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  const int warp_lane = threadIdx.x % kWarpSize;
  const bool holds_warp_total = warp_lane < lanes;
  const int64_t row_sums = p.d + 1;
#pragma unroll
  for (int o = 0; o < kMaxOut; ++o) {
    if (o < p.k) {
#pragma unroll
      for (int c = 0; c < T::kCols; ++c) acc[o][c] = sum_over_groups(acc[o][c], lanes);
      bias_acc[o] = sum_over_groups(bias_acc[o], lanes);
      if (holds_warp_total) {
#pragma unroll
        for (int c = 0; c < T::kCols; ++c) buffer.values[warp][warp_lane][c] = acc[o][c];
        buffer.values[warp][warp_lane][T::kCols] = bias_acc[o];
      }
      __syncthreads();
      if (threadIdx.x < lanes) {
#pragma unroll
        for (int q = 0; q < T::kPacks; ++q) {
#pragma unroll
          for (int j = 0; j < kW; ++j) {
            const int64_t col = (threadIdx.x + static_cast<int64_t>(q) * lanes) * kW + j;
            if (col < p.d) {
              opmath_t total = 0;
              for (int w = 0; w < warps; ++w) total += buffer.values[w][threadIdx.x][q * kW + j];
              emit(o * row_sums + col, total);
            }
          }
        }
        if (threadIdx.x == 0) {
          opmath_t total = 0;
          for (int w = 0; w < warps; ++w) total += buffer.values[w][0][T::kCols];
          emit(o * row_sums + p.d, total);
        }
      }
      __syncthreads();
    }
  }
  loss = sum_over_groups(loss, lanes);
  if (warp_lane == 0) buffer.values[warp][0][0] = loss;
  __syncthreads();
  if (threadIdx.x == 0) {
    opmath_t total = 0;
    for (int w = 0; w < warps; ++w) total += buffer.values[w][0][0];
    emit(p.k * row_sums, total);
  }
  __syncthreads();
}

// One step's sums: block b takes rows [b * rows_per_block, ...). With one block
// the sums go straight to `final`; otherwise to the block's row of partials.
template <typename T, bool kAligned, typename Final>
__global__ void __launch_bounds__(kThreads)
    linreg_sums_kernel(Problem<typename T::scalar> p, int64_t n, int64_t rows_per_block, int lanes,
                       typename T::opmath_t* partials, Final final) {
  using opmath_t = typename T::opmath_t;
  __shared__ CrossWarpBuffer<opmath_t, T::kCols> buffer;
  const int64_t row_begin = blockIdx.x * rows_per_block;
  const int64_t row_end = std::min(n, row_begin + rows_per_block);
  const int64_t num_sums = p.num_sums();
  if (partials == nullptr) {
    block_sums<T, kAligned>(p, row_begin, row_end, lanes, buffer, final);
  } else {
    const StorePartials<opmath_t> store{partials + blockIdx.x * num_sums};
    block_sums<T, kAligned>(p, row_begin, row_end, lanes, buffer, store);
  }
}

// A whole epoch of one-block steps in one launch: step s updates the model
// from rows indices[s * batch_size, ...) before step s + 1 reads it.
template <typename T, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    linreg_epoch_kernel(Problem<typename T::scalar> p, const int64_t* indices, int64_t total_rows,
                        int64_t batch_size, int lanes, FinishSums<typename T::scalar> apply,
                        typename T::scalar* losses, bool is_first_step) {
  using scalar_t = typename T::scalar;
  using opmath_t = typename T::opmath_t;
  __shared__ CrossWarpBuffer<opmath_t, T::kCols> buffer;
  const int64_t steps = ceil_div(total_rows, batch_size);
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t begin = step * batch_size;
    const int64_t n = std::min(batch_size, total_rows - begin);
    Problem<scalar_t> batch = p;
    batch.rows = indices + begin;
    FinishSums<scalar_t> step_apply = apply;
    step_apply.loss = losses + step;
    step_apply.inv_n = opmath_t(1) / static_cast<opmath_t>(n);
    step_apply.first_step = is_first_step && step == 0;
    // block_sums ends with a barrier, after which this step's updates are
    // visible to the whole block.
    block_sums<T, kAligned>(batch, 0, n, lanes, buffer, step_apply);
  }
}

// Row blocks of a step: a function of the shape only, so the summation order
// is too. One block up to kMinRowsPerBlock rows (the epoch kernel relies on it).
inline int64_t row_blocks(int64_t n, int64_t num_sums) {
  constexpr int64_t kPartialSumsAlwaysAllowed = int64_t{1} << 22;
  const int64_t by_rows = ceil_div(n, kMinRowsPerBlock);
  const int64_t by_memory = std::max<int64_t>(1, kPartialSumsAlwaysAllowed / num_sums);
  return std::max<int64_t>(1, std::min({by_rows, kTargetBlocks, by_memory}));
}

// Threads of a one-block step over n rows: only the warps that get a row, so
// that small minibatches (the book's 10 rows) pay for one warp's barriers and
// sums. Rows land on the same lanes as in a kThreads block, whose other warps
// would only add exact zeros, so the sums are bitwise the same.
inline int one_block_threads(int64_t n, int lanes) {
  return static_cast<int>(std::min<int64_t>(kThreads, ceil_div(n * lanes, kWarpSize) * kWarpSize));
}

template <typename T>
int lanes_for(int64_t d) {
  return cuda::pow2_at_least(ceil_div(ceil_div(d, T::kPackWidth), T::kPacks), kWarpSize);
}

template <typename scalar_t>
bool is_aligned_problem(const Problem<scalar_t>& p, int pack_width) {
  const int64_t bytes = static_cast<int64_t>(sizeof(scalar_t)) * pack_width;
  return p.d % pack_width == 0 && cuda::is_aligned(p.X, bytes) && cuda::is_aligned(p.weight, bytes);
}

// The composed path for rows too long for registers: r = X W^T + b - y, then
// the sums as GEMMs, handed to `final` like the fused kernel's.
template <typename scalar_t, typename Final>
void composed_step(const Problem<scalar_t>& p, const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, const Final& final, cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const auto acc_type = c10::CppTypeToScalarType<opmath_t>::value;
  const at::Tensor Xo = X.to(acc_type);
  at::Tensor r = at::mm(Xo, weight.to(acc_type).t());
  if (bias.has_value()) r.add_(bias->to(acc_type));
  r.sub_(y.to(acc_type).view({X.size(0), p.k}));
  const at::Tensor weight_sums = at::cat({at::mm(r.t(), Xo), r.sum(0).unsqueeze(1)}, 1).flatten();
  const at::Tensor loss_sum = (r * r).sum().mul_(0.5).view({1});
  const at::Tensor totals = at::cat({weight_sums, loss_sum}).contiguous();
  cuda::launch_sum_partials(totals.const_data_ptr<opmath_t>(), 1, p.num_sums(), final, stream);
}

// One step (or gradient) over the rows of `p`: the fused kernel and, with
// several blocks, the sum of their partials.
template <typename scalar_t, typename Final>
void launch_sums(const Problem<scalar_t>& p, int64_t n, const at::Tensor& X, const Final& final,
                 cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t num_sums = p.num_sums();
  const int64_t blocks = ceil_div(n, ceil_div(n, row_blocks(n, num_sums)));
  const int64_t rows_per_block = ceil_div(n, blocks);
  at::Tensor partials;
  opmath_t* partials_ptr = nullptr;
  if (blocks > 1) {
    partials = at::empty({blocks, num_sums}, X.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
    partials_ptr = partials.mutable_data_ptr<opmath_t>();
  }
  dispatch_tile<scalar_t>(p.d, p.k, [&](auto tile) {
    using T = decltype(tile);
    const int lanes = lanes_for<T>(p.d);
    cuda::dispatch_bool(is_aligned_problem(p, T::kPackWidth), [&](auto aligned) {
      const int threads = blocks == 1 ? one_block_threads(n, lanes) : kThreads;
      linreg_sums_kernel<T, decltype(aligned)::value>
          <<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p, n, rows_per_block, lanes, partials_ptr, final);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (blocks > 1) cuda::launch_sum_partials(partials_ptr, blocks, num_sums, final, stream);
}

template <typename scalar_t>
bool fits_fused_kernel(int64_t d, int64_t k) {
  bool fits = false;
  dispatch_outputs(k, [&](auto max_out) {
    fits = k <= kSkinnyMaxOut && d <= Tile<scalar_t, decltype(max_out)::value, false>::kMaxFeatures;
  });
  return fits;
}

template <typename scalar_t>
Problem<scalar_t> make_problem(const at::Tensor& X, const at::Tensor& y, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  return {X.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), nullptr, weight.const_data_ptr<scalar_t>(),
          bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr, X.size(1), weight.size(0)};
}

template <typename scalar_t>
scalar_t* data_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->mutable_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
FinishSums<scalar_t> make_apply(const LinregTensors& t, const StepArgs& a) {
  using opmath_t = at::opmath_type<scalar_t>;
  FinishSums<scalar_t> apply;
  apply.weight = t.weight.mutable_data_ptr<scalar_t>();
  apply.bias = data_or_null<scalar_t>(t.bias);
  apply.weight_momentum = data_or_null<scalar_t>(t.weight_momentum);
  apply.bias_momentum = data_or_null<scalar_t>(t.bias_momentum);
  apply.sums = ParamSums{t.X.size(1), t.weight.size(0)};
  apply.first_step = a.is_first_step;
  apply.sgd = sgd_scalars<opmath_t>(a.lr, a.opt);
  return apply;
}

template <typename scalar_t>
void launch_linreg_grad(const LinregTensors& t, const at::Tensor& loss, const at::Tensor& grad_weight,
                        const at::Tensor& grad_bias) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t n = t.X.size(0), d = t.X.size(1), k = t.weight.size(0);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const Problem<scalar_t> p = make_problem<scalar_t>(t.X, t.y, t.weight, t.bias);
  FinishSums<scalar_t> store;
  store.loss = loss.mutable_data_ptr<scalar_t>();
  store.grad_weight = grad_weight.mutable_data_ptr<scalar_t>();
  store.grad_bias = grad_bias.mutable_data_ptr<scalar_t>();
  store.sums = ParamSums{d, k};
  store.inv_n = opmath_t(1) / static_cast<opmath_t>(n);
  if (fits_fused_kernel<scalar_t>(d, k)) {
    launch_sums(p, n, t.X, store, stream);
  } else {
    composed_step(p, t.X, t.y, t.weight, t.bias, store, stream);
  }
}

template <typename scalar_t>
void launch_linreg_steps(const LinregTensors& t, const at::Tensor& indices, int64_t batch_size,
                         const StepArgs& args, const at::Tensor& losses) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t d = t.X.size(1), k = t.weight.size(0);
  const int64_t total_rows = indices.defined() ? indices.numel() : t.X.size(0);
  const int64_t steps = ceil_div(total_rows, batch_size);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const FinishSums<scalar_t> apply = make_apply<scalar_t>(t, args);
  const Problem<scalar_t> whole = make_problem<scalar_t>(t.X, t.y, t.weight, t.bias);
  const bool fused = fits_fused_kernel<scalar_t>(d, k);
  if (indices.defined() && fused && batch_size <= kMinRowsPerBlock) {
    dispatch_tile<scalar_t>(d, k, [&](auto tile) {
      using T = decltype(tile);
      cuda::dispatch_bool(is_aligned_problem(whole, T::kPackWidth), [&](auto aligned) {
        const int lanes = lanes_for<T>(d);
        linreg_epoch_kernel<T, decltype(aligned)::value>
            <<<1, one_block_threads(batch_size, lanes), 0, stream>>>(whole, indices.const_data_ptr<int64_t>(),
                                                                    total_rows, batch_size, lanes, apply,
                                                                    losses.mutable_data_ptr<scalar_t>(),
                                                                    args.is_first_step);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
    return;
  }
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t begin = step * batch_size;
    const int64_t n = std::min(batch_size, total_rows - begin);
    FinishSums<scalar_t> step_apply = apply;
    step_apply.loss = losses.mutable_data_ptr<scalar_t>() + step;
    step_apply.inv_n = opmath_t(1) / static_cast<opmath_t>(n);
    step_apply.first_step = args.is_first_step && step == 0;
    Problem<scalar_t> batch = whole;
    if (indices.defined()) batch.rows = indices.const_data_ptr<int64_t>() + begin;
    if (fused) {
      launch_sums(batch, n, t.X, step_apply, stream);
    } else {
      const at::Tensor rows = indices.defined() ? indices.slice(0, begin, begin + n) : at::Tensor();
      const at::Tensor Xb = rows.defined() ? t.X.index_select(0, rows) : t.X;
      const at::Tensor yb = rows.defined() ? t.y.index_select(0, rows) : t.y;
      composed_step(batch, Xb, yb, t.weight, t.bias, step_apply, stream);
    }
  }
}

// The explicit instantiations that linreg_<dtype>.cu hold.
#define FUSED_LINREG_INSTANTIATE_LINREG_LAUNCHERS(scalar_t)                                                      \
  template void launch_linreg_grad<scalar_t>(const LinregTensors&, const at::Tensor&, const at::Tensor&,        \
                                             const at::Tensor&);                                                \
  template void launch_linreg_steps<scalar_t>(const LinregTensors&, const at::Tensor&, int64_t, const StepArgs&, \
                                              const at::Tensor&)

}  // namespace fused_linreg::linreg_cuda
