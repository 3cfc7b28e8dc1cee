// The CPU kernel of linreg_gram: adds sum_i w_i a_i a_i^T, a_i = [x_i - x_shift,
// y_i - y_shift, 1], to gram. Rows are written, shifted, into a block small
// enough for the L1 cache (one read of X); the block's products are summed by
// register tiles (float64: 4 rows x 2 vectors; float32: 8 rows x 1 vector,
// whose 8 lanes would make wider tiles overshoot the diagonal), only those on or above the diagonal
// (gram is symmetric): about half the multiply-adds of a GEMM, which for these
// few columns also runs well below the BLAS's peak. The block's sums are then
// added to float64 totals. float64 input multiplies in float64; float32 (and
// float16/bfloat16) input in float32, each product rounded to float32 and
// summed over at most kMaxBlockRows rows before the float64 total takes it:
// twice the lanes per instruction, an error of about 1e-7 relative per block
// sum (as the data's own rounding) that does not grow with the row count.
// Each entry sums its rows in order, block after block: the result depends on
// the rows alone.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace fused_linreg {
namespace {

using at::vec::Vectorized;
constexpr int64_t kBlockBytes = 24 << 10;      // a block of shifted rows, within the L1 cache
constexpr int64_t kMaxBlockRows = 256;         // rows a float32 partial sum takes at most

// The products' type: float64 for float64 input, float32 for the narrower types.
template <typename scalar_t>
using product_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// A tile: kTileRows<prod_t> rows x kTileVectors<prod_t> vectors of gram, in registers.
template <typename prod_t>
constexpr int64_t kTileRows = std::is_same_v<prod_t, double> ? 4 : 8;
template <typename prod_t>
constexpr int64_t kTileVectors = std::is_same_v<prod_t, double> ? 2 : 1;

// Rows [0, count) of X/y/weight, shifted and scaled by sqrt(w), into block
// (count x width, zero beyond column m).
template <typename scalar_t, typename prod_t>
void write_block(const scalar_t* X, const scalar_t* y, const double* weight, const double* x_shift,
                 const double* y_shift, int64_t count, int64_t d, int64_t k, int64_t width, prod_t* block) {
  for (int64_t i = 0; i < count; ++i) {
    const double scale = weight != nullptr ? std::sqrt(weight[i]) : 1.0;
    const scalar_t* x = X + i * d;
    const scalar_t* t = y + i * k;
    prod_t* row = block + i * width;
    for (int64_t j = 0; j < d; ++j) row[j] = static_cast<prod_t>((static_cast<double>(x[j]) - x_shift[j]) * scale);
    for (int64_t j = 0; j < k; ++j) row[d + j] = static_cast<prod_t>((static_cast<double>(t[j]) - y_shift[j]) * scale);
    row[d + k] = static_cast<prod_t>(scale);
  }
}

// Whether each of the count shifts is a float. Then for float products and no
// weights the block's x - shift, rounded to float, is one float subtraction
// (IEEE rounds the exact difference once either way), which the compiler
// vectorises: the conversions through double cost as much as the products.
bool all_floats(const double* values, int64_t count, std::vector<float>& as_floats) {
  as_floats.resize(static_cast<size_t>(count));
  for (int64_t j = 0; j < count; ++j) {
    as_floats[j] = static_cast<float>(values[j]);
    if (static_cast<double>(as_floats[j]) != values[j]) return false;
  }
  return true;
}

// write_block for float products, no weights and float shifts.
template <typename scalar_t>
void write_block_of_floats(const scalar_t* X, const scalar_t* y, const float* x_shift, const float* y_shift,
                           int64_t count, int64_t d, int64_t k, int64_t width, float* block) {
  for (int64_t i = 0; i < count; ++i) {
    const scalar_t* x = X + i * d;
    const scalar_t* t = y + i * k;
    float* row = block + i * width;
    for (int64_t j = 0; j < d; ++j) row[j] = static_cast<float>(x[j]) - x_shift[j];
    for (int64_t j = 0; j < k; ++j) row[d + j] = static_cast<float>(t[j]) - y_shift[j];
    row[d + k] = 1.0f;
  }
}

// totals[i0:i0+rows, j0:j0+vectors] += sum over the block's rows of row[i] * row[j].
template <typename prod_t>
void add_tile(const prod_t* block, int64_t count, int64_t width, int64_t i0, int64_t j0, double* totals) {
  using Vec = Vectorized<prod_t>;
  constexpr int64_t kLanes = Vec::size(), kRows = kTileRows<prod_t>, kVectors = kTileVectors<prod_t>;
  Vec sums[kRows][kVectors];
  for (int64_t ii = 0; ii < kRows; ++ii) {
    for (int64_t v = 0; v < kVectors; ++v) sums[ii][v] = Vec(prod_t(0));
  }
  for (int64_t r = 0; r < count; ++r) {
    const prod_t* row = block + r * width;
    Vec right[kVectors];
    for (int64_t v = 0; v < kVectors; ++v) right[v] = Vec::loadu(row + j0 + v * kLanes);
    for (int64_t ii = 0; ii < kRows; ++ii) {
      const Vec left(row[i0 + ii]);
      for (int64_t v = 0; v < kVectors; ++v) sums[ii][v] = at::vec::fmadd(left, right[v], sums[ii][v]);
    }
  }
  for (int64_t ii = 0; ii < kRows; ++ii) {
    for (int64_t v = 0; v < kVectors; ++v) {
      double* total = totals + (i0 + ii) * width + j0 + v * kLanes;
      if constexpr (std::is_same_v<prod_t, double>) {
        (Vec::loadu(total) + sums[ii][v]).store(total);
      } else {
        alignas(64) prod_t part[kLanes];
        sums[ii][v].store(part);
        for (int64_t c = 0; c < kLanes; ++c) total[c] += static_cast<double>(part[c]);
      }
    }
  }
}

template <typename scalar_t>
void gram_rows_impl(const scalar_t* X, const scalar_t* y, const double* weight, const double* x_shift,
                    const double* y_shift, int64_t n, int64_t d, int64_t k, double* gram) {
  using prod_t = product_t<scalar_t>;
  constexpr int64_t kLanes = Vectorized<prod_t>::size();
  constexpr int64_t kRows = kTileRows<prod_t>, kTileWidth = kTileVectors<prod_t> * kLanes;
  const int64_t m = d + k + 1;
  // Tiles start on the vector at or left of the diagonal: a tile's width of slack on the right
  // (and at least a tile's height of rows).
  const int64_t width = std::max((m + kLanes - 1) / kLanes * kLanes + kTileWidth, (m + kRows - 1) / kRows * kRows);
  const int64_t block_rows = std::clamp<int64_t>(kBlockBytes / (width * static_cast<int64_t>(sizeof(prod_t))), 8,
                                                 kMaxBlockRows);
  std::vector<prod_t> block(static_cast<size_t>(block_rows * width), prod_t(0));
  std::vector<double> totals(static_cast<size_t>(width * width), 0.0);
  std::vector<float> x_float_shift, y_float_shift;
  bool float_rows = false;
  if constexpr (std::is_same_v<prod_t, float>) {
    float_rows = weight == nullptr && all_floats(x_shift, d, x_float_shift) && all_floats(y_shift, k, y_float_shift);
  }
  for (int64_t start = 0; start < n; start += block_rows) {
    const int64_t count = std::min(block_rows, n - start);
    if constexpr (std::is_same_v<prod_t, float>) {
      if (float_rows) {
        write_block_of_floats(X + start * d, y + start * k, x_float_shift.data(), y_float_shift.data(), count, d, k,
                              width, block.data());
      }
    }
    if (!float_rows) {
      const double* block_weight = weight != nullptr ? weight + start : nullptr;
      write_block(X + start * d, y + start * k, block_weight, x_shift, y_shift, count, d, k, width, block.data());
    }
    for (int64_t i0 = 0; i0 < m; i0 += kRows) {
      for (int64_t j0 = i0 / kLanes * kLanes; j0 < m; j0 += kTileWidth) {
        add_tile(block.data(), count, width, i0, j0, totals.data());
      }
    }
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = i; j < m; ++j) {
      gram[i * m + j] += totals[i * width + j];
      if (j != i) gram[j * m + i] = gram[i * m + j];
    }
  }
}

}  // namespace

void CPU_CAPABILITY::CpuKernels::gram_rows(const at::Tensor& X, const at::Tensor& y2d,
                                         const std::optional<at::Tensor>& sample_weight, const at::Tensor& x_shift,
                                         const at::Tensor& y_shift, const at::Tensor& gram) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, X.scalar_type(), "fused_linreg.linreg_gram", [&] {
    gram_rows_impl(X.const_data_ptr<scalar_t>(), y2d.const_data_ptr<scalar_t>(),
                   sample_weight ? sample_weight->const_data_ptr<double>() : nullptr, x_shift.const_data_ptr<double>(),
                   y_shift.const_data_ptr<double>(), X.size(0), X.size(1), y2d.size(1),
                   gram.mutable_data_ptr<double>());
  });
}

}  // namespace fused_linreg
