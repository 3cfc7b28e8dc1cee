// CPU kernels of the squared losses (front: loss.cpp): coefficient * (x - t)^2
// with reductions none / sum / mean, and its gradient. Sums run over
// fixed-size chunks whose partial sums are added in chunk order: bitwise
// identical for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/rows.h"
#include "kernels.h"

namespace fused_linreg {
namespace {

constexpr int64_t kSumChunk = 16384;

template <typename scalar_t, typename acc_t>
acc_t sum_squared_difference(const scalar_t* x, const scalar_t* t, int64_t len) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t kBlock = 256;  // converted in stack blocks for the half types
  acc_t xs[kBlock], ts[kBlock];
  Vec acc(acc_t(0));
  acc_t tail = 0;
  for (int64_t start = 0; start < len; start += kBlock) {
    const int64_t n = std::min(kBlock, len - start);
    const acc_t* xa;
    const acc_t* ta;
    if constexpr (std::is_same_v<acc_t, scalar_t>) {
      xa = x + start;
      ta = t + start;
    } else {
      cpu::convert_to_acc(x + start, n, xs);
      cpu::convert_to_acc(t + start, n, ts);
      xa = xs;
      ta = ts;
    }
    int64_t i = 0;
    for (; i + Vec::size() <= n; i += Vec::size()) {
      const Vec diff = Vec::loadu(xa + i) - Vec::loadu(ta + i);
      acc = at::vec::fmadd(diff, diff, acc);
    }
    for (; i < n; ++i) {
      const acc_t diff = xa[i] - ta[i];
      tail += diff * diff;
    }
  }
  return cpu::lane_sum(acc) + tail;
}

template <typename scalar_t>
void squared_difference_none(const scalar_t* x, const scalar_t* t, int64_t numel, double coefficient,
                             scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t c = static_cast<acc_t>(coefficient);
  at::parallel_for(0, numel, kSumChunk, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t diff = static_cast<acc_t>(x[i]) - static_cast<acc_t>(t[i]);
      out[i] = static_cast<scalar_t>(c * diff * diff);
    }
  });
}

template <typename scalar_t>
scalar_t squared_difference_sum(const scalar_t* x, const scalar_t* t, int64_t numel, double coefficient,
                                bool mean) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunks = cpu::ceil_div(numel, kSumChunk);
  std::vector<acc_t> partial(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t start = c * kSumChunk;
      partial[c] = sum_squared_difference<scalar_t, acc_t>(x + start, t + start, std::min(kSumChunk, numel - start));
    }
  });
  acc_t total = 0;
  for (const acc_t p : partial) total += p;
  total *= static_cast<acc_t>(coefficient);
  if (mean) total /= static_cast<acc_t>(numel);  // 0 / 0 = NaN for an empty mean, as in torch
  return static_cast<scalar_t>(total);
}

}  // namespace

void CPU_CAPABILITY::CpuKernels::squared_difference(const at::Tensor& x, const at::Tensor& t, Reduction reduction,
                                                  double coefficient, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_linreg.squared_difference", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    if (reduction == Reduction::None) {
      squared_difference_none(xp, tp, x.numel(), coefficient, out.mutable_data_ptr<scalar_t>());
    } else {
      *out.mutable_data_ptr<scalar_t>() =
          squared_difference_sum(xp, tp, x.numel(), coefficient, reduction == Reduction::Mean);
    }
  });
}

// grad_input = slope * grad_output * (x - t), slope = 2 * coefficient (/ numel for a mean).
void CPU_CAPABILITY::CpuKernels::squared_difference_backward(const at::Tensor& g, const at::Tensor& x,
                                                           const at::Tensor& t, Reduction reduction,
                                                           double coefficient, const at::Tensor& grad_input) {
  const bool elementwise = reduction == Reduction::None;
  const int64_t numel = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_linreg.squared_difference_backward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    acc_t slope = static_cast<acc_t>(2.0 * coefficient);
                                    if (reduction == Reduction::Mean) slope /= static_cast<acc_t>(numel);
                                    const scalar_t* xp = x.const_data_ptr<scalar_t>();
                                    const scalar_t* tp = t.const_data_ptr<scalar_t>();
                                    const scalar_t* gp = g.const_data_ptr<scalar_t>();
                                    scalar_t* out = grad_input.mutable_data_ptr<scalar_t>();
                                    const acc_t g_scalar = elementwise ? acc_t(0) : static_cast<acc_t>(gp[0]);
                                    at::parallel_for(0, numel, kSumChunk, [&](int64_t begin, int64_t end) {
                                      for (int64_t i = begin; i < end; ++i) {
                                        const acc_t gi = elementwise ? static_cast<acc_t>(gp[i]) : g_scalar;
                                        const acc_t diff = static_cast<acc_t>(xp[i]) - static_cast<acc_t>(tp[i]);
                                        out[i] = static_cast<scalar_t>(slope * gi * diff);
                                      }
                                    });
                                  });
}

}  // namespace fused_linreg
