// torch.randperm for the epoch's default shuffle. The book's epoch (1000 rows)
// takes a few microseconds; at::randperm spent twice that on its shuffle, most
// of it in one 64-bit division per row. For the sizes an epoch of small steps
// has, this draws the same numbers from the same generator state and applies
// ATen's own shuffle (randperm_cpu below 2^32 / 20 rows: r = 0..n-1, then
// r[i] swaps with r[i + random() % (n - i)]), with the numbers drawn first in
// one pass and each remainder computed by multiplications; tests compare the
// result with torch.randperm's.
#include "shuffle.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randperm.h>

#include <algorithm>
#include <mutex>
#include <numeric>
#include <utility>
#include <vector>

namespace fused_linreg {
namespace {

// Longer permutations go to at::randperm: their epochs are long enough that
// its divisions do not matter, and the table below stays small (512 KiB).
constexpr int64_t kMaxTabledRows = int64_t{1} << 16;

// a % d for 32-bit a and d from a precomputed ceil(2^64 / d) (Lemire, Kaser and
// Kurz, "Faster remainder by direct computation", 2019: exact for all 32-bit a, d).
inline uint32_t remainder(uint32_t a, uint64_t inverse, uint32_t d) {
  const uint64_t fraction = inverse * a;
  return static_cast<uint32_t>((static_cast<unsigned __int128>(fraction) * d) >> 64);
}

// ceil(2^64 / d) for d = 0..n (entry 1 wraps to 0, which gives a % 1 = 0),
// kept per thread for the last n: an epoch after epoch draws the same n.
const std::vector<uint64_t>& divisor_inverses(int64_t n) {
  thread_local std::vector<uint64_t> inverses;
  if (static_cast<int64_t>(inverses.size()) != n + 1) {
    inverses.resize(static_cast<size_t>(n + 1));
    inverses[0] = 0;
    for (int64_t d = 1; d <= n; ++d) inverses[d] = UINT64_MAX / static_cast<uint64_t>(d) + 1;
  }
  return inverses;
}

// engine() for `count` numbers into out, as `count` calls would draw them: the
// words left in the state tempered in one pass (a loop the compiler vectorises,
// with no shuffle waiting on it), and the engine's own next_state at a twist.
void draw_numbers(at::mt19937& engine, uint32_t* out, int64_t count) {
  at::mt19937_data_pod data = engine.data();
  int64_t drawn = 0;
  while (drawn < count) {
    if (data.left_ == 1) {  // this draw twists the state first
      engine.set_data(data);
      out[drawn++] = engine();
      data = engine.data();
      continue;
    }
    const int64_t run = std::min<int64_t>(data.left_ - 1, count - drawn);
    const uint32_t* words = data.state_.data() + data.next_;
    for (int64_t t = 0; t < run; ++t) {
      uint32_t y = words[t];
      y ^= y >> 11;
      y ^= (y << 7) & 0x9d2c5680u;
      y ^= (y << 15) & 0xefc60000u;
      y ^= y >> 18;
      out[drawn + t] = y;
    }
    data.left_ -= static_cast<int>(run);
    data.next_ += static_cast<uint32_t>(run);
    drawn += run;
  }
  engine.set_data(data);
}

// An int64 tensor of n elements for the permutation: the last one this thread
// drew, when nothing else holds it or its memory any more (the epoch does not
// keep its rows). Epoch after epoch, a fresh one cost a third of the shuffle:
// the allocation, its release (where glibc consolidated its free lists) and
// writes to memory no longer in L1.
at::Tensor reusable_rows(int64_t n) {
  thread_local at::Tensor kept;
  if (!kept.defined() || kept.numel() != n || kept.use_count() != 1 || kept.storage().use_count() != 1) {
    kept = at::empty({n}, at::kLong);
  }
  return kept;
}

}  // namespace

at::Tensor random_permutation(int64_t n, const std::optional<at::Generator>& generator, at::Device device) {
  if (!device.is_cpu() || n > kMaxTabledRows) {
    return at::randperm(n, generator, at::TensorOptions(at::kLong).device(device));
  }
  at::Tensor permutation = reusable_rows(n);
  int64_t* rows = permutation.mutable_data_ptr<int64_t>();
  std::iota(rows, rows + n, int64_t{0});
  if (n < 2) return permutation;
  const std::vector<uint64_t>& inverses = divisor_inverses(n);
  thread_local std::vector<uint32_t> numbers;
  numbers.resize(static_cast<size_t>(n - 1));
  auto* source = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  {
    const std::lock_guard<std::mutex> lock(source->mutex_);
    at::mt19937 engine = source->engine();
    draw_numbers(engine, numbers.data(), n - 1);
    source->set_engine(engine);
  }
  for (int64_t i = 0; i + 1 < n; ++i) {
    const uint32_t left = static_cast<uint32_t>(n - i);
    std::swap(rows[i], rows[i + remainder(numbers[i], inverses[left], left)]);
  }
  return permutation;
}

}  // namespace fused_linreg
