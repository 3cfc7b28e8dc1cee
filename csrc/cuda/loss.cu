// CUDA kernels of the squared losses (front: loss.cpp): coefficient * (x - t)^2
// with reductions none / sum / mean, and its gradient. The arithmetic follows
// the CPU kernels (cpu/loss.cpp) step by step. Sums are two-stage: blocks reduce fixed element
// ranges into partials that a second kernel adds in order; no atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "kernel_utils.cuh"
#include "kernels.h"

namespace fused_linreg {
namespace {

using namespace cuda;  // the kernel helpers of kernel_utils.cuh

constexpr int kThreads = 256;

// Every pointer 16-byte aligned: the kernels then move whole packs at once.
bool all_aligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers) {
    if (!cuda::is_aligned(p, 16)) return false;
  }
  return true;
}

int64_t elementwise_blocks(int64_t numel, int vec) {
  return std::min(ceil_div(ceil_div(numel, vec), kThreads), cuda::kMaxGridBlocks);
}

// out[i] = coefficient * d * d, d = x[i] - t[i] in opmath.
template <typename scalar_t, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    squared_difference_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t,
                              scalar_t* __restrict__ out, int64_t numel, at::opmath_type<scalar_t> coefficient) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * kVec;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < numel; i += stride) {
    const Pack<scalar_t, kVec> xv = load_pack<kVec, kAligned>(x + i, numel - i);
    const Pack<scalar_t, kVec> tv = load_pack<kVec, kAligned>(t + i, numel - i);
    Pack<scalar_t, kVec> result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const opmath_t diff = static_cast<opmath_t>(xv.v[j]) - static_cast<opmath_t>(tv.v[j]);
      result.v[j] = static_cast<scalar_t>(coefficient * diff * diff);
    }
    store_pack<kVec, kAligned>(out + i, result, numel - i);
  }
}

// The reduced loss from the sum of squared differences, as on the CPU:
// coefficient * sum, then / numel for a mean (0 / 0 = NaN when empty).
template <typename scalar_t>
struct StoreReducedLoss {
  using opmath_t = at::opmath_type<scalar_t>;
  scalar_t* out;
  opmath_t coefficient;
  bool mean;
  int64_t numel;

  __device__ void operator()(int64_t, opmath_t sum) const {
    opmath_t total = sum * coefficient;
    if (mean) total /= static_cast<opmath_t>(numel);
    *out = static_cast<scalar_t>(total);
  }
};

// Stage one: block b sums d * d over elements [b * per_block, (b + 1) * per_block)
// (per_block a multiple of the pack size, so packs stay aligned); each thread
// adds its packs in order, then the block adds its threads in a fixed tree. One
// block stores the loss itself; more write `partials` for sum_partials_kernel.
template <typename scalar_t, bool kAligned>
__global__ void __launch_bounds__(kThreads)
    squared_difference_sum_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ t, int64_t numel,
                                  int64_t per_block, at::opmath_type<scalar_t>* __restrict__ partials,
                                  StoreReducedLoss<scalar_t> store) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const int64_t begin = blockIdx.x * per_block;
  const int64_t end = std::min(numel, begin + per_block);
  opmath_t acc = 0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kVec;
  for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * kVec; i < end; i += stride) {
    const Pack<scalar_t, kVec> xv = load_pack<kVec, kAligned>(x + i, end - i);
    const Pack<scalar_t, kVec> tv = load_pack<kVec, kAligned>(t + i, end - i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const opmath_t diff = static_cast<opmath_t>(xv.v[j]) - static_cast<opmath_t>(tv.v[j]);
      acc += diff * diff;
    }
  }
  const opmath_t block_total = cuda::block_sum(acc);
  if (threadIdx.x == 0) {
    if (partials != nullptr) {
      partials[blockIdx.x] = block_total;
    } else {
      store(0, block_total);
    }
  }
}

// grad_input[i] = slope * g * (x[i] - t[i]), g = grad_output[i] elementwise or
// the one grad_output value of a sum or mean.
template <typename scalar_t, bool kAligned, bool kElementwiseGrad>
__global__ void __launch_bounds__(kThreads)
    squared_difference_backward_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ x,
                                       const scalar_t* __restrict__ t, scalar_t* __restrict__ grad_input,
                                       int64_t numel, at::opmath_type<scalar_t> slope) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const opmath_t grad_scalar = kElementwiseGrad ? opmath_t(0) : static_cast<opmath_t>(grad_output[0]);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * kVec;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < numel; i += stride) {
    const Pack<scalar_t, kVec> xv = load_pack<kVec, kAligned>(x + i, numel - i);
    const Pack<scalar_t, kVec> tv = load_pack<kVec, kAligned>(t + i, numel - i);
    Pack<scalar_t, kVec> gv;
    if (kElementwiseGrad) gv = load_pack<kVec, kAligned>(grad_output + i, numel - i);
    Pack<scalar_t, kVec> result;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const opmath_t g = kElementwiseGrad ? static_cast<opmath_t>(gv.v[j]) : grad_scalar;
      const opmath_t diff = static_cast<opmath_t>(xv.v[j]) - static_cast<opmath_t>(tv.v[j]);
      result.v[j] = static_cast<scalar_t>(slope * g * diff);
    }
    store_pack<kVec, kAligned>(grad_input + i, result, numel - i);
  }
}

// Blocks of the sum's stage one: a function of numel only, so that the
// summation order is too.
int64_t sum_blocks(int64_t numel) {
  constexpr int64_t kMinElementsPerBlock = 4096;
  constexpr int64_t kMaxBlocks = 1024;
  return std::clamp<int64_t>(ceil_div(numel, kMinElementsPerBlock), 1, kMaxBlocks);
}

template <typename scalar_t>
void launch_squared_difference_sum(const at::Tensor& x, const at::Tensor& t, bool mean, double coefficient,
                                   const at::Tensor& out, cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr int kVec = kVec16<scalar_t>;
  const int64_t numel = x.numel();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* tp = t.const_data_ptr<scalar_t>();
  const StoreReducedLoss<scalar_t> store{out.mutable_data_ptr<scalar_t>(), static_cast<opmath_t>(coefficient), mean,
                                         numel};
  const int64_t per_block = ceil_div(ceil_div(numel, sum_blocks(numel)), kVec) * kVec;
  const int64_t blocks = ceil_div(numel, per_block);
  at::Tensor partials;
  opmath_t* partials_ptr = nullptr;
  if (blocks > 1) {
    partials = at::empty({blocks}, x.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
    partials_ptr = partials.mutable_data_ptr<opmath_t>();
  }
  cuda::dispatch_bool(all_aligned({xp, tp}), [&](auto aligned) {
    squared_difference_sum_kernel<scalar_t, decltype(aligned)::value>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(xp, tp, numel, per_block, partials_ptr, store);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (blocks > 1) cuda::launch_sum_partials(partials_ptr, blocks, int64_t{1}, store, stream);
}

template <typename scalar_t>
void launch_squared_difference(const at::Tensor& x, const at::Tensor& t, double coefficient,
                               const at::Tensor& out, cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t numel = x.numel();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* tp = t.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const int64_t blocks = elementwise_blocks(numel, kVec16<scalar_t>);
  cuda::dispatch_bool(all_aligned({xp, tp, op}), [&](auto aligned) {
    squared_difference_kernel<scalar_t, decltype(aligned)::value>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(xp, tp, op, numel, static_cast<opmath_t>(coefficient));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename scalar_t>
void launch_squared_difference_backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& t,
                                        Reduction reduction, double coefficient, const at::Tensor& grad_input,
                                        cudaStream_t stream) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t numel = x.numel();
  // The slope in opmath, rounded as on the CPU.
  opmath_t slope = static_cast<opmath_t>(2.0 * coefficient);
  if (reduction == Reduction::Mean) slope /= static_cast<opmath_t>(numel);
  const bool elementwise = reduction == Reduction::None;
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* tp = t.const_data_ptr<scalar_t>();
  scalar_t* out = grad_input.mutable_data_ptr<scalar_t>();
  const bool aligned = all_aligned({xp, tp, out}) && (!elementwise || all_aligned({gp}));
  const int64_t blocks = elementwise_blocks(numel, kVec16<scalar_t>);
  cuda::dispatch_bool(aligned, [&](auto aligned_flag) {
    cuda::dispatch_bool(elementwise, [&](auto elementwise_flag) {
      squared_difference_backward_kernel<scalar_t, decltype(aligned_flag)::value, decltype(elementwise_flag)::value>
          <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(gp, xp, tp, out, numel, slope);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace

void DeviceKernels<c10::kCUDA>::squared_difference(const at::Tensor& x, const at::Tensor& t, Reduction reduction,
                                                   double coefficient, const at::Tensor& out) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_linreg.squared_difference", [&] {
    if (reduction == Reduction::None) {
      launch_squared_difference<scalar_t>(x, t, coefficient, out, stream);
    } else {
      launch_squared_difference_sum<scalar_t>(x, t, reduction == Reduction::Mean, coefficient, out, stream);
    }
  });
}

void DeviceKernels<c10::kCUDA>::squared_difference_backward(const at::Tensor& grad_output, const at::Tensor& x,
                                                            const at::Tensor& t, Reduction reduction,
                                                            double coefficient, const at::Tensor& grad_input) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_linreg.squared_difference_backward",
                                  [&] {
                                    launch_squared_difference_backward<scalar_t>(grad_output, x, t, reduction,
                                                                                 coefficient, grad_input, stream);
                                  });
}

}  // namespace fused_linreg
