// CUDA kernel of sgd_: torch.optim.SGD's update for a whole list of parameters
// with few launches (multi-tensor apply). Tensors are grouped by dtype; each
// launch carries up to kMaxTensors tensors' pointers in its kernel arguments
// and has one block per chunk of kChunkElements elements, so many small
// parameters share a launch and big ones spread over the GPU. lr (tensor
// overload), grad_scale and found_inf are read on the device: no host sync.
// The front (csrc/sgd.cpp) checks the arguments and hands over contiguous lists.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "kernel_utils.cuh"
#include "kernels.h"
#include "sgd_math.h"

namespace fused_linreg {
namespace {

using namespace cuda;  // the kernel helpers of kernel_utils.cuh

constexpr int kThreads = 256;
constexpr int64_t kChunkElements = 16384;
// Packs in flight per thread: independent loads before the first store.
constexpr int kIlp = 2;

// A one-element tensor read on the device, in whatever floating dtype it has.
struct DeviceScalar {
  enum Kind : int { kAbsent, kFloat64, kFloat32, kFloat16, kBFloat16 };
  const void* data;
  Kind kind;
};

DeviceScalar device_scalar(const std::optional<at::Tensor>& t, const char* arg) {
  if (!t.has_value() || !t->defined()) return {nullptr, DeviceScalar::kAbsent};
  const at::ScalarType dtype = t->scalar_type();
  const DeviceScalar::Kind kind = dtype == at::kDouble     ? DeviceScalar::kFloat64
                                  : dtype == at::kFloat    ? DeviceScalar::kFloat32
                                  : dtype == at::kHalf     ? DeviceScalar::kFloat16
                                  : dtype == at::kBFloat16 ? DeviceScalar::kBFloat16
                                                           : DeviceScalar::kAbsent;
  TORCH_CHECK(kind != DeviceScalar::kAbsent, "fused_linreg.sgd_: ", arg,
              " must be float64, float32, float16 or bfloat16, got ", dtype);
  return {t->const_data_ptr(), kind};
}

template <typename T>
__device__ __forceinline__ T read_device_scalar(DeviceScalar s) {
  switch (s.kind) {
    case DeviceScalar::kFloat64:
      return static_cast<T>(*static_cast<const double*>(s.data));
    case DeviceScalar::kFloat32:
      return static_cast<T>(*static_cast<const float*>(s.data));
    case DeviceScalar::kFloat16:
      return static_cast<T>(static_cast<float>(*static_cast<const c10::Half*>(s.data)));
    case DeviceScalar::kBFloat16:
      return static_cast<T>(static_cast<float>(*static_cast<const c10::BFloat16*>(s.data)));
    default:
      return T(0);
  }
}

// The tensors of one launch, passed by value as the kernel's argument. kDepth
// is 3 (param, grad, momentum buffer) or 2 (no momentum); the tensor counts
// keep the whole argument list within the classic 4 KB limit. first_chunk[i]
// is the launch-wide index of tensor i's first chunk (block).
template <int kDepth>
struct SgdLaunchTensors {
  static constexpr int kMaxTensors = kDepth == 3 ? 96 : 128;
  void* data[kDepth][kMaxTensors];
  int64_t numel[kMaxTensors];
  int32_t first_chunk[kMaxTensors];
  bool first_step[kMaxTensors];
  int32_t num_tensors;
};

static_assert(sizeof(SgdLaunchTensors<3>) + sizeof(SgdScalars<double>) + 3 * sizeof(DeviceScalar) <= 4096,
              "sgd_ kernel arguments exceed 4 KB");
static_assert(sizeof(SgdLaunchTensors<2>) + sizeof(SgdScalars<double>) + 3 * sizeof(DeviceScalar) <= 4096,
              "sgd_ kernel arguments exceed 4 KB");

// Updates elements [begin, end) of one tensor, packs of kWidth elements (end -
// begin a multiple of kWidth, pointers aligned to a pack). Thread t takes packs
// t, t + blockDim, ...; kIlp of them are loaded before any is stored.
template <int kWidth, bool kMomentum, typename scalar_t, typename opmath_t>
__device__ __forceinline__ void sgd_update_range(scalar_t* __restrict__ param, scalar_t* __restrict__ grad,
                                                 scalar_t* __restrict__ buf, int64_t begin, int64_t end,
                                                 bool first_step, bool has_grad_scale, opmath_t grad_scale,
                                                 const SgdScalars<opmath_t>& s) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kWidth;
  for (int64_t base = begin + static_cast<int64_t>(threadIdx.x) * kWidth; base < end; base += stride * kIlp) {
    Pack<scalar_t, kWidth> p[kIlp], g[kIlp], b[kIlp];
#pragma unroll
    for (int u = 0; u < kIlp; ++u) {
      const int64_t i = base + u * stride;
      if (i < end) {
        p[u] = load_pack<kWidth, true>(param + i, kWidth);
        g[u] = load_pack<kWidth, true>(grad + i, kWidth);
        if (kMomentum && !first_step) b[u] = load_pack<kWidth, true>(buf + i, kWidth);
      }
    }
#pragma unroll
    for (int u = 0; u < kIlp; ++u) {
      const int64_t i = base + u * stride;
      if (i >= end) continue;
#pragma unroll
      for (int j = 0; j < kWidth; ++j) {
        opmath_t gj = static_cast<opmath_t>(g[u].v[j]);
        if (has_grad_scale) {
          gj = gj / grad_scale;
          g[u].v[j] = static_cast<scalar_t>(gj);
        }
        opmath_t bj = (kMomentum && !first_step) ? static_cast<opmath_t>(b[u].v[j]) : opmath_t(0);
        p[u].v[j] = static_cast<scalar_t>(sgd_update(static_cast<opmath_t>(p[u].v[j]), gj, bj, first_step, s));
        if (kMomentum) b[u].v[j] = static_cast<scalar_t>(bj);
      }
      store_pack<kWidth, true>(param + i, p[u], kWidth);
      if (has_grad_scale) store_pack<kWidth, true>(grad + i, g[u], kWidth);
      if (kMomentum) store_pack<kWidth, true>(buf + i, b[u], kWidth);
    }
  }
}

// One block per chunk. A set found_inf means a skipped step: nothing is
// written, momentum buffers included.
template <typename scalar_t, int kDepth>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(const SgdLaunchTensors<kDepth> tensors, const SgdScalars<at::opmath_type<scalar_t>> scalars,
               const DeviceScalar lr, const DeviceScalar grad_scale, const DeviceScalar found_inf) {
  using opmath_t = at::opmath_type<scalar_t>;
  constexpr bool kMomentum = kDepth == 3;
  constexpr int kVec = kVec16<scalar_t>;
  if (found_inf.kind != DeviceScalar::kAbsent && read_device_scalar<double>(found_inf) != 0.0) return;
  SgdScalars<opmath_t> s = scalars;
  if (lr.kind != DeviceScalar::kAbsent) s.lr = read_device_scalar<opmath_t>(lr);
  const bool has_grad_scale = grad_scale.kind != DeviceScalar::kAbsent;
  const opmath_t scale = has_grad_scale ? read_device_scalar<opmath_t>(grad_scale) : opmath_t(1);

  // The tensor of this block's chunk: the last one whose first chunk is <= it.
  const int32_t chunk = static_cast<int32_t>(blockIdx.x);
  int lo = 0;
  int hi = tensors.num_tensors - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tensors.first_chunk[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int tensor = lo;
  const int64_t offset = static_cast<int64_t>(chunk - tensors.first_chunk[tensor]) * kChunkElements;
  const int64_t remaining = tensors.numel[tensor] - offset;
  const int64_t n = remaining < kChunkElements ? remaining : kChunkElements;
  scalar_t* param = static_cast<scalar_t*>(tensors.data[0][tensor]) + offset;
  scalar_t* grad = static_cast<scalar_t*>(tensors.data[1][tensor]) + offset;
  scalar_t* buf = nullptr;
  bool first_step = false;
  if constexpr (kMomentum) {
    buf = static_cast<scalar_t*>(tensors.data[2][tensor]) + offset;
    first_step = tensors.first_step[tensor];
  }

  // Chunks start at multiples of kChunkElements, so a tensor whose pointers
  // are aligned has aligned chunks.
  const bool aligned = cuda::is_aligned(param, 16) && cuda::is_aligned(grad, 16) &&
                       (!kMomentum || cuda::is_aligned(buf, 16));
  const int64_t vector_end = aligned ? n / kVec * kVec : 0;
  if (aligned) {
    sgd_update_range<kVec, kMomentum>(param, grad, buf, 0, vector_end, first_step, has_grad_scale, scale, s);
  }
  sgd_update_range<1, kMomentum>(param, grad, buf, vector_end, n, first_step, has_grad_scale, scale, s);
}

// Launches the kernel over the tensors `members` (all of dtype scalar_t), as
// many tensors per launch as the argument struct holds.
template <typename scalar_t, int kDepth>
void launch_sgd(const SgdLists& work, const std::vector<size_t>& members,
                const SgdScalars<at::opmath_type<scalar_t>>& scalars, DeviceScalar lr, DeviceScalar grad_scale,
                DeviceScalar found_inf, cudaStream_t stream) {
  using Tensors = SgdLaunchTensors<kDepth>;
  constexpr int64_t kMaxChunks = std::numeric_limits<int32_t>::max();
  Tensors tensors{};
  int64_t chunks = 0;
  const auto flush = [&] {
    if (tensors.num_tensors == 0) return;
    sgd_kernel<scalar_t, kDepth>
        <<<static_cast<unsigned>(chunks), kThreads, 0, stream>>>(tensors, scalars, lr, grad_scale, found_inf);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    tensors = Tensors{};
    chunks = 0;
  };
  for (const size_t i : members) {
    const int64_t numel = work.params[i].numel();
    if (numel == 0) continue;
    const int64_t tensor_chunks = ceil_div(numel, kChunkElements);
    TORCH_CHECK(tensor_chunks <= kMaxChunks, "fused_linreg.sgd_: params[", i, "] has too many elements (", numel, ")");
    if (tensors.num_tensors == Tensors::kMaxTensors || chunks + tensor_chunks > kMaxChunks) flush();
    const int slot = tensors.num_tensors++;
    tensors.data[0][slot] = work.params[i].data_ptr();
    tensors.data[1][slot] = work.grads[i].data_ptr();
    if constexpr (kDepth == 3) {
      tensors.data[2][slot] = work.buffers[i].data_ptr();
      tensors.first_step[slot] = work.is_first_step[i];
    }
    tensors.numel[slot] = numel;
    tensors.first_chunk[slot] = static_cast<int32_t>(chunks);
    chunks += tensor_chunks;
  }
  flush();
}

}  // namespace

void DeviceKernels<c10::kCUDA>::sgd(const SgdLists& lists, double lr, const std::optional<at::Tensor>& lr_tensor,
                                    const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
                                    const std::optional<at::Tensor>& found_inf) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const DeviceScalar lr_on_device = device_scalar(lr_tensor, "lr");
  const DeviceScalar scale = device_scalar(grad_scale, "grad_scale");
  const DeviceScalar inf = device_scalar(found_inf, "found_inf");
  const bool use_momentum = opt.momentum != 0.0;
  std::vector<std::pair<at::ScalarType, std::vector<size_t>>> by_dtype;
  for (size_t i = 0; i < lists.params.size(); ++i) {
    const at::ScalarType dtype = lists.params[i].scalar_type();
    auto group = std::find_if(by_dtype.begin(), by_dtype.end(), [&](const auto& g) { return g.first == dtype; });
    if (group == by_dtype.end()) group = by_dtype.insert(by_dtype.end(), {dtype, {}});
    group->second.push_back(i);
  }
  for (const auto& group : by_dtype) {
    const std::vector<size_t>& members = group.second;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, group.first, "fused_linreg.sgd_", [&] {
      const auto scalars = sgd_scalars<at::opmath_type<scalar_t>>(lr, opt);
      if (use_momentum) {
        launch_sgd<scalar_t, 3>(lists, members, scalars, lr_on_device, scale, inf, stream);
      } else {
        launch_sgd<scalar_t, 2>(lists, members, scalars, lr_on_device, scale, inf, stream);
      }
    });
  }
}

}  // namespace fused_linreg
