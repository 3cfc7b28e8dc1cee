// CPU kernel of sgd_: torch.optim.SGD's update for a whole list of parameters
// in one parallel pass. The work is cut into fixed-size chunks across all
// tensors, so many small parameters share threads as well as few big ones.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "cpu/rows.h"
#include "kernels.h"
#include "sgd_math.h"

namespace fused_linreg {
namespace {

using at::vec::Vectorized;

constexpr int64_t kChunkElements = 16384;
// Below this many elements in all, waking a second thread costs more than the
// update itself (and much more when the other core is busy): run serially.
constexpr int64_t kParallelMinElements = 1 << 17;

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

// sgd_update (sgd_math.h) on a vector of elements, the same operations in the
// same order. Written out with Vectorized because the compiler does not
// vectorise the scalar loop (its loop-invariant branches stay in it).
template <typename opmath_t>
inline Vectorized<opmath_t> sgd_update_vec(const Vectorized<opmath_t>& param, const Vectorized<opmath_t>& grad,
                                           Vectorized<opmath_t>& buf, bool first_step,
                                           const SgdScalars<opmath_t>& s) {
  using Vec = Vectorized<opmath_t>;
  Vec d = s.maximize ? grad.neg() : grad;
  if (s.weight_decay != opmath_t(0)) d = d + Vec(s.weight_decay) * param;
  if (s.momentum != opmath_t(0)) {
    buf = first_step ? d : Vec(s.momentum) * buf + Vec(opmath_t(1) - s.dampening) * d;
    d = s.nesterov ? d + Vec(s.momentum) * buf : buf;
  }
  return param - Vec(s.lr) * d;
}

// The update of n elements of float or double tensors (the last vector partly
// filled, so every element takes the same operations).
template <typename opmath_t, bool kMomentum, bool kFirstStep, bool kScaled>
void sgd_chunk(opmath_t* param, opmath_t* grad, opmath_t* buf, int64_t n, const SgdScalars<opmath_t>& s,
               opmath_t grad_scale) {
  using Vec = Vectorized<opmath_t>;
  for (int64_t k = 0; k < n; k += Vec::size()) {
    const int count = static_cast<int>(std::min<int64_t>(Vec::size(), n - k));
    Vec g = Vec::loadu(grad + k, count);
    if constexpr (kScaled) {
      g = g / Vec(grad_scale);
      g.store(grad + k, count);
    }
    Vec b = (kMomentum && !kFirstStep) ? Vec::loadu(buf + k, count) : Vec(opmath_t(0));
    sgd_update_vec(Vec::loadu(param + k, count), g, b, kFirstStep, s).store(param + k, count);
    if constexpr (kMomentum) b.store(buf + k, count);
  }
}

// Half-type elements short of a whole vector (the tail of sgd_chunk_reduced),
// through float copies.
template <typename scalar_t, bool kMomentum, bool kFirstStep, bool kScaled>
void sgd_chunk_via_float(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n, const SgdScalars<float>& s,
                         float grad_scale) {
  constexpr int64_t kBlock = 256;
  float p[kBlock], g[kBlock], b[kBlock] = {};
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    cpu::convert_to_acc(param + start, len, p);
    cpu::convert_to_acc(grad + start, len, g);
    if constexpr (kMomentum && !kFirstStep) cpu::convert_to_acc(buf + start, len, b);
    sgd_chunk<float, kMomentum, kFirstStep, kScaled>(p, g, b, len, s, grad_scale);
    cpu::store_row(p, len, param + start);
    if constexpr (kScaled) cpu::store_row(g, len, grad + start);
    if constexpr (kMomentum) cpu::store_row(b, len, buf + start);
  }
}

// Half types: whole vectors are converted to float in registers, two float
// vectors per half vector (converting element by element is far slower for
// float16); the rest goes through sgd_chunk_via_float.
template <typename scalar_t, bool kMomentum, bool kFirstStep, bool kScaled>
void sgd_chunk_reduced(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n, const SgdScalars<float>& s,
                       float grad_scale) {
  using Vec = Vectorized<scalar_t>;
  using FloatVec = Vectorized<float>;
  int64_t k = 0;
  for (; k + Vec::size() <= n; k += Vec::size()) {
    FloatVec p0, p1, g0, g1, b0(0.0f), b1(0.0f);
    at::vec::load_to_float(param + k, p0, p1);
    at::vec::load_to_float(grad + k, g0, g1);
    if constexpr (kScaled) {
      g0 = g0 / FloatVec(grad_scale);
      g1 = g1 / FloatVec(grad_scale);
      at::vec::convert_from_float<scalar_t>(g0, g1).store(grad + k);
    }
    if constexpr (kMomentum && !kFirstStep) at::vec::load_to_float(buf + k, b0, b1);
    p0 = sgd_update_vec(p0, g0, b0, kFirstStep, s);
    p1 = sgd_update_vec(p1, g1, b1, kFirstStep, s);
    at::vec::convert_from_float<scalar_t>(p0, p1).store(param + k);
    if constexpr (kMomentum) at::vec::convert_from_float<scalar_t>(b0, b1).store(buf + k);
  }
  sgd_chunk_via_float<scalar_t, kMomentum, kFirstStep, kScaled>(param + k, grad + k, kMomentum ? buf + k : buf,
                                                                 n - k, s, grad_scale);
}

template <typename scalar_t, bool kMomentum, bool kFirstStep, bool kScaled>
void sgd_chunk_any(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n,
                   const SgdScalars<at::opmath_type<scalar_t>>& s, at::opmath_type<scalar_t> grad_scale) {
  if constexpr (std::is_same_v<scalar_t, at::opmath_type<scalar_t>>) {
    sgd_chunk<scalar_t, kMomentum, kFirstStep, kScaled>(param, grad, buf, n, s, grad_scale);
  } else {
    sgd_chunk_reduced<scalar_t, kMomentum, kFirstStep, kScaled>(param, grad, buf, n, s, grad_scale);
  }
}

template <typename scalar_t, bool kMomentum, bool kFirstStep>
void sgd_chunk_scaled_or_not(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n,
                             const SgdScalars<at::opmath_type<scalar_t>>& s, std::optional<double> grad_scale) {
  if (grad_scale.has_value()) {
    sgd_chunk_any<scalar_t, kMomentum, kFirstStep, true>(param, grad, buf, n, s,
                                                        static_cast<at::opmath_type<scalar_t>>(*grad_scale));
  } else {
    sgd_chunk_any<scalar_t, kMomentum, kFirstStep, false>(param, grad, buf, n, s, 1);
  }
}

template <typename scalar_t>
void sgd_run_chunk(const SgdLists& work, const Chunk& c, double lr, const SgdOptions& opt,
                   std::optional<double> grad_scale) {
  const auto s = sgd_scalars<at::opmath_type<scalar_t>>(lr, opt);
  scalar_t* param = work.params[c.tensor].mutable_data_ptr<scalar_t>() + c.begin;
  scalar_t* grad = work.grads[c.tensor].mutable_data_ptr<scalar_t>() + c.begin;
  const int64_t n = c.end - c.begin;
  if (opt.momentum == 0.0) {
    sgd_chunk_scaled_or_not<scalar_t, false, false>(param, grad, nullptr, n, s, grad_scale);
    return;
  }
  scalar_t* buf = work.buffers[c.tensor].mutable_data_ptr<scalar_t>() + c.begin;
  if (work.is_first_step[c.tensor]) {
    sgd_chunk_scaled_or_not<scalar_t, true, true>(param, grad, buf, n, s, grad_scale);
  } else {
    sgd_chunk_scaled_or_not<scalar_t, true, false>(param, grad, buf, n, s, grad_scale);
  }
}

std::vector<Chunk> split_into_chunks(at::TensorList params) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t numel = params[i].numel();
    for (int64_t begin = 0; begin < numel; begin += kChunkElements) {
      chunks.push_back({static_cast<int64_t>(i), begin, std::min(numel, begin + kChunkElements)});
    }
  }
  return chunks;
}

}  // namespace

// found_inf and grad_scale are read on the host (CPU tensors): a skipped step
// returns before any work. A CPU lr tensor was read by the front.
void CPU_CAPABILITY::CpuKernels::sgd(const SgdLists& lists, double lr, const std::optional<at::Tensor>& lr_tensor,
                                   const SgdOptions& opt, const std::optional<at::Tensor>& grad_scale,
                                   const std::optional<at::Tensor>& found_inf) {
  TORCH_INTERNAL_ASSERT(!lr_tensor.has_value(), "fused_linreg.sgd_: the front reads a CPU lr");
  if (found_inf.has_value() && found_inf->item<double>() != 0.0) {
    return;  // a skipped step changes nothing, momentum buffers included
  }
  const std::optional<double> scale =
      grad_scale.has_value() ? std::optional<double>(grad_scale->item<double>()) : std::nullopt;
  const std::vector<Chunk> chunks = split_into_chunks(lists.params);
  int64_t total_elements = 0;
  for (const at::Tensor& p : lists.params) total_elements += p.numel();
  const int64_t chunk_count = static_cast<int64_t>(chunks.size());
  const int64_t grain = total_elements < kParallelMinElements ? std::max<int64_t>(chunk_count, 1) : 1;
  at::parallel_for(0, chunk_count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Chunk& c = chunks[i];
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lists.params[c.tensor].scalar_type(),
                                      "fused_linreg.sgd_",
                                      [&] { sgd_run_chunk<scalar_t>(lists, c, lr, opt, scale); });
    }
  });
}

}  // namespace fused_linreg
