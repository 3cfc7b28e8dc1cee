// Device helpers shared by the CUDA kernels: packed (vector) loads and stores
// with scalar fallbacks, fixed-order warp and block sums, and the second stage
// of the two-stage reductions. Every sum here adds in an order fixed by the
// shapes alone, so results are bitwise identical run to run; no atomics.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/macros/Macros.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace fused_linreg::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullWarpMask = 0xffffffffu;
// Cap for grid-stride kernels: enough blocks to fill any current GPU many times.
constexpr int64_t kMaxGridBlocks = int64_t{1} << 16;

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The smallest power of two >= value, for value <= cap (a power of two).
inline int pow2_at_least(int64_t value, int cap) {
  int p = 1;
  while (p < cap && p < value) p *= 2;
  return p;
}

C10_HOST_DEVICE inline bool is_aligned(const void* ptr, int64_t bytes) {
  return reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(bytes) == 0;
}

// Elements of T in one 16-byte load.
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

// N consecutive elements, aligned so that one instruction moves them.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Loads the `remaining` (possibly fewer than N) elements at p; missing ones are
// zero. kAligned promises that p is aligned to the whole pack: full packs then
// take one vector load, a tail still goes element by element.
template <int N, bool kAligned, typename T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p, int64_t remaining) {
  Pack<T, N> r;
  if (kAligned && remaining >= N) {
    r = *reinterpret_cast<const Pack<T, N>*>(p);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) r.v[j] = j < remaining ? p[j] : T(0);
  }
  return r;
}

template <int N, bool kAligned, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& value, int64_t remaining) {
  if (kAligned && remaining >= N) {
    *reinterpret_cast<Pack<T, N>*>(p) = value;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (j < remaining) p[j] = value.v[j];
    }
  }
}

// Sum over aligned groups of `lanes` lanes (a power of two <= 32); every lane
// of a group gets the same bits. The whole warp must call it.
template <typename T>
__device__ __forceinline__ T group_sum(T value, int lanes) {
  for (int offset = lanes / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(kFullWarpMask, value, offset);
  }
  return value;
}

// Sum over the block (blockDim.x a multiple of 32); the result is valid in
// thread 0. Call at most once per kernel: its shared buffer is not reset.
template <typename T>
__device__ __forceinline__ T block_sum(T value) {
  __shared__ T warp_sums[kWarpSize];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  value = group_sum(value, kWarpSize);
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / kWarpSize;
    value = group_sum(lane < warps ? warp_sums[lane] : T(0), kWarpSize);
  }
  return value;
}

constexpr int kSumPartialsThreads = 256;

// Stage two of a two-stage reduction: partials is [num_partials][num_sums];
// store(e, total) receives the sum over partials of column e. A block takes
// sums_per_block adjacent columns (reads stay coalesced) and splits the
// partials between its slices of threads; each slice adds its partials in
// order, then the slices are added in order.
template <typename acc_t, typename Store>
__global__ void __launch_bounds__(kSumPartialsThreads)
    sum_partials_kernel(const acc_t* __restrict__ partials, int64_t num_partials, int64_t num_sums,
                        int sums_per_block, Store store) {
  __shared__ acc_t slice_sums[kSumPartialsThreads];
  const int slices = blockDim.x / sums_per_block;
  const int local = threadIdx.x % sums_per_block;
  const int slice = threadIdx.x / sums_per_block;
  const int64_t grid_stride = static_cast<int64_t>(gridDim.x) * sums_per_block;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * sums_per_block; first < num_sums; first += grid_stride) {
    const int64_t e = first + local;
    acc_t acc = 0;
    if (e < num_sums) {
      for (int64_t p = slice; p < num_partials; p += slices) acc += partials[p * num_sums + e];
    }
    slice_sums[threadIdx.x] = acc;
    __syncthreads();
    if (slice == 0 && e < num_sums) {
      acc_t total = 0;
      for (int s = 0; s < slices; ++s) total += slice_sums[s * sums_per_block + local];
      store(e, total);
    }
    __syncthreads();
  }
}

template <typename acc_t, typename Store>
void launch_sum_partials(const acc_t* partials, int64_t num_partials, int64_t num_sums, const Store& store,
                         cudaStream_t stream) {
  const int sums_per_block = pow2_at_least(num_sums, kWarpSize);
  const int64_t blocks = std::min(ceil_div(num_sums, sums_per_block), kMaxGridBlocks);
  sum_partials_kernel<acc_t, Store><<<static_cast<unsigned>(blocks), kSumPartialsThreads, 0, stream>>>(
      partials, num_partials, num_sums, sums_per_block, store);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Calls f with std::true_type or std::false_type, so that a runtime flag can
// pick a kernel instantiation.
template <typename F>
void dispatch_bool(bool value, F&& f) {
  if (value) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

}  // namespace fused_linreg::cuda
