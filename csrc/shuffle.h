// The default row order of an epoch: torch.randperm's permutation, drawn in C++.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace fused_linreg {

// torch.randperm(n, generator=generator, device=device) (int64): the same
// permutation from the same generator state, which it advances as torch does.
// On the CPU the result may be the tensor this thread was given last time, so
// a caller uses it and lets it go (a tensor still held is never reused).
at::Tensor random_permutation(int64_t n, const std::optional<at::Generator>& generator, at::Device device);

}  // namespace fused_linreg
