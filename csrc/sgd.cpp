// CPU kernel of sgd_: torch.optim.SGD's update for a whole list of parameters
// in one parallel pass. The work is cut into fixed-size chunks across all
// tensors, so many small parameters share threads as well as few big ones.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "sgd_math.h"
#include "sgd_lists.h"

namespace fused_linreg {
namespace {

constexpr int64_t kChunkElements = 16384;
// Below this many elements in all, waking a second thread costs more than the
// update itself (and much more when the other core is busy): run serially.
constexpr int64_t kParallelMinElements = 1 << 17;

struct Chunk {
  int64_t tensor;
  int64_t begin;
  int64_t end;
};

// The loop is instantiated per momentum case and scaling so that the compiler
// sees no loop-invariant branches that would stop it from vectorising.
template <typename scalar_t, bool kMomentum, bool kFirstStep, bool kScaled>
void sgd_chunk(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n,
               const SgdScalars<at::opmath_type<scalar_t>>& s, at::opmath_type<scalar_t> grad_scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t k = 0; k < n; ++k) {
    opmath_t g = static_cast<opmath_t>(grad[k]);
    if constexpr (kScaled) {
      g = g / grad_scale;
      grad[k] = static_cast<scalar_t>(g);
    }
    opmath_t b = (kMomentum && !kFirstStep) ? static_cast<opmath_t>(buf[k]) : opmath_t(0);
    param[k] = static_cast<scalar_t>(sgd_update(static_cast<opmath_t>(param[k]), g, b, kFirstStep, s));
    if constexpr (kMomentum) buf[k] = static_cast<scalar_t>(b);
  }
}

template <typename scalar_t, bool kMomentum, bool kFirstStep>
void sgd_chunk_scaled_or_not(scalar_t* param, scalar_t* grad, scalar_t* buf, int64_t n,
                             const SgdScalars<at::opmath_type<scalar_t>>& s, std::optional<double> grad_scale) {
  if (grad_scale.has_value()) {
    sgd_chunk<scalar_t, kMomentum, kFirstStep, true>(param, grad, buf, n, s,
                                                    static_cast<at::opmath_type<scalar_t>>(*grad_scale));
  } else {
    sgd_chunk<scalar_t, kMomentum, kFirstStep, false>(param, grad, buf, n, s, 1);
  }
}

template <typename scalar_t>
void sgd_run_chunk(const SgdWorkList& work, const Chunk& c, double lr, const SgdOptions& opt,
                   std::optional<double> grad_scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  const SgdScalars<opmath_t> s{static_cast<opmath_t>(lr), static_cast<opmath_t>(opt.weight_decay),
                               static_cast<opmath_t>(opt.momentum), static_cast<opmath_t>(opt.dampening),
                               opt.nesterov, opt.maximize};
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

std::vector<Chunk> split_into_chunks(const std::vector<at::Tensor>& params) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t numel = params[i].numel();
    for (int64_t begin = 0; begin < numel; begin += kChunkElements) {
      chunks.push_back({static_cast<int64_t>(i), begin, std::min(numel, begin + kChunkElements)});
    }
  }
  return chunks;
}

void sgd_cpu_impl(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  const c10::List<bool>& is_first_step, double lr, const SgdOptions& opt,
                  const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  if (found_inf.has_value() && found_inf->defined() && found_inf->item<double>() != 0.0) {
    return;  // a skipped step changes nothing, momentum buffers included
  }
  const std::optional<double> scale =
      (grad_scale.has_value() && grad_scale->defined()) ? std::optional<double>(grad_scale->item<double>())
                                                        : std::nullopt;
  SgdWorkList work(params, grads, momentum_buffers, is_first_step, opt.momentum != 0.0, scale.has_value());
  const std::vector<Chunk> chunks = split_into_chunks(work.params);
  int64_t total_elements = 0;
  for (const at::Tensor& p : work.params) total_elements += p.numel();
  const int64_t chunk_count = static_cast<int64_t>(chunks.size());
  const int64_t grain = total_elements < kParallelMinElements ? std::max<int64_t>(chunk_count, 1) : 1;
  at::parallel_for(0, chunk_count, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Chunk& c = chunks[i];
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.params[c.tensor].scalar_type(),
                                      "fused_linreg.sgd_", [&] { sgd_run_chunk<scalar_t>(work, c, lr, opt, scale); });
    }
  });
  work.copy_back();
}

void sgd_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
             const c10::List<bool>& is_first_step, double lr, double weight_decay, double momentum, double dampening,
             bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
             const std::optional<at::Tensor>& found_inf) {
  const SgdOptions opt{weight_decay, momentum, dampening, nesterov, maximize};
  check_lr(lr);
  check_sgd_args(params, grads, momentum_buffers, is_first_step, opt, grad_scale, found_inf);
  sgd_cpu_impl(params, grads, momentum_buffers, is_first_step, lr, opt, grad_scale, found_inf);
}

void sgd_tensor_lr_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                       const c10::List<bool>& is_first_step, const at::Tensor& lr, double weight_decay, double momentum,
                       double dampening, bool nesterov, bool maximize, const std::optional<at::Tensor>& grad_scale,
                       const std::optional<at::Tensor>& found_inf) {
  const SgdOptions opt{weight_decay, momentum, dampening, nesterov, maximize};
  check_lr_tensor(lr, params);
  const double lr_value = lr.item<double>();
  check_lr(lr_value);
  check_sgd_args(params, grads, momentum_buffers, is_first_step, opt, grad_scale, found_inf);
  sgd_cpu_impl(params, grads, momentum_buffers, is_first_step, lr_value, opt, grad_scale, found_inf);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_linreg, CPU, m) {
  m.impl("sgd_", &sgd_cpu);
  m.impl("sgd_.tensor_lr", &sgd_tensor_lr_cpu);
}

}  // namespace fused_linreg
