// CPU kernels of the fused linear-regression ops (front: linreg.cpp):
// linreg_grad, linreg_step_ and linreg_epoch_. One pass over the rows of X
// computes each row's residual
// r = W x + b - y and, while the row is in L1, adds its share of the loss and
// of both gradients. The update then runs on the small (k, d) parameters.
// The epoch op runs exactly the step's code once per minibatch, so the two are
// bitwise identical.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "cpu/rows.h"
#include "kernels.h"
#include "param_sums.h"
#include "sgd_math.h"

namespace fused_linreg {
namespace {

template <typename scalar_t>
struct Batch {
  const scalar_t* X;
  const scalar_t* y;
  const int64_t* rows;  // row numbers of the minibatch, or nullptr for rows 0..n-1
  int64_t n;
};

// A block of rows, their k dot products and residuals, and the sums that run
// over all rows per output. Those sums advance one row at a time for all k
// outputs together: k independent chains of adds, not one long chain per output.
template <typename scalar_t, typename acc_t>
struct BlockScratch {
  int64_t row_ids[cpu::kRowBlock];
  const scalar_t* x[cpu::kRowBlock];  // the block's rows where they lie
  const acc_t* x_acc[cpu::kRowBlock];  // or converted to float (see accumulate_rows)
  std::vector<acc_t> converted;
  std::vector<acc_t> dots;       // dots[i * k + j]: output j of the block's row i
  std::vector<acc_t> residuals;  // residuals[j * kRowBlock + i]: output j of row i
  std::vector<acc_t> bias_sums;  // per output: sum of its residuals
  std::vector<acc_t> losses;     // per output: sum of half its squared residuals
};

template <typename scalar_t, typename acc_t>
struct Scratch {
  BlockScratch<scalar_t, acc_t> block;
  std::vector<acc_t> partials;
  std::vector<acc_t> weight;  // float copies of the parameters for the half types
  std::vector<acc_t> bias;
};

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// One row's residuals for four float outputs, dot + bias - y, added into those
// outputs' bias and loss sums: each lane takes the scalar loop's operations.
inline __m128 residuals_by_four(__m128 dots, __m128 bias, __m128 y, __m128& bias_sum, __m128& loss) {
  const __m128 r = _mm_sub_ps(_mm_add_ps(dots, bias), y);
  bias_sum = _mm_add_ps(bias_sum, r);
  loss = _mm_fmadd_ps(_mm_mul_ps(_mm_set1_ps(0.5f), r), r, loss);
  return r;
}
#endif

// The residual loop of accumulate_block below, four float outputs at a time
// where the build has SSE (each lane takes the scalar loop's operations, so the
// bits are the same): the scalar loop's per-output work cost a quarter of the
// step with four outputs. Returns how many outputs it covered.
template <typename scalar_t, typename acc_t>
int64_t add_residuals_by_four(const Batch<scalar_t>& batch, const int64_t* row_ids, int64_t count, int64_t k,
                              const acc_t* dots, const acc_t* b, BlockScratch<scalar_t, acc_t>& block) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    using cpu::kRowBlock;
    acc_t* residuals = block.residuals.data();
    int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
      const __m128 bias = b ? _mm_loadu_ps(b + j) : _mm_setzero_ps();
      __m128 bias_sum = _mm_loadu_ps(block.bias_sums.data() + j);
      __m128 loss = _mm_loadu_ps(block.losses.data() + j);
      const auto residual = [&](int64_t i) {
        return residuals_by_four(_mm_loadu_ps(dots + i * k + j), bias, _mm_loadu_ps(batch.y + row_ids[i] * k + j),
                                 bias_sum, loss);
      };
      // residuals holds each output's rows together: four rows at a time are
      // transposed in registers into four stores.
      int64_t i = 0;
      for (; i + 4 <= count; i += 4) {
        __m128 r0 = residual(i), r1 = residual(i + 1), r2 = residual(i + 2), r3 = residual(i + 3);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(residuals + j * kRowBlock + i, r0);
        _mm_storeu_ps(residuals + (j + 1) * kRowBlock + i, r1);
        _mm_storeu_ps(residuals + (j + 2) * kRowBlock + i, r2);
        _mm_storeu_ps(residuals + (j + 3) * kRowBlock + i, r3);
      }
      for (; i < count; ++i) {
        alignas(16) float lanes[4];
        _mm_store_ps(lanes, residual(i));
        for (int q = 0; q < 4; ++q) residuals[(j + q) * kRowBlock + i] = lanes[q];
      }
      _mm_storeu_ps(block.bias_sums.data() + j, bias_sum);
      _mm_storeu_ps(block.losses.data() + j, loss);
    }
    return j;
  }
#endif
  return 0;
}

// Rows per group of the block's dot products: the weights are read once per
// group, and with four outputs its rows make 4 x kDotRows independent chains of
// FMAs. AVX-512's 32 registers hold four rows' 16 accumulators (single-threaded,
// 2048 x 64 float rows in L2, the four-output path: 13.2 -> 12.0 ns a row with
// 4 outputs, 60 -> 44 with 16, against three rows); AVX2's 16 hold three.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kDotRows = 4;
#else
constexpr int kDotRows = 3;
#endif

// out[i * k + j] = dot(x[i], W_j) for the block's rows x[0..count) and outputs j < k.
template <typename row_t, typename acc_t>
void block_dot_products(const row_t* const* x, int64_t count, const acc_t* W, int64_t d, int64_t k, acc_t* out) {
  int64_t i = 0;
  for (; i + kDotRows <= count; i += kDotRows) cpu::dot_all_rows<kDotRows>(x + i, W, d, k, out + i * k, k);
  for (; i + 2 <= count; i += 2) cpu::dot_all_rows<2>(x + i, W, d, k, out + i * k, k);
  if (i < count) cpu::dot_all_rows(x[i], W, d, k, out + i * k);
}

// The residuals of the block's rows x[0..count), their loss and bias sums, and
// their share of the weight-gradient sums.
template <typename scalar_t, typename acc_t, typename row_t>
void accumulate_block(const Batch<scalar_t>& batch, const row_t* const* x, int64_t count, const ParamSums& layout,
                      const acc_t* W, const acc_t* b, acc_t* sums, BlockScratch<scalar_t, acc_t>& block) {
  const int64_t d = layout.features, k = layout.outputs;
  acc_t* dots = block.dots.data();
  acc_t* residuals = block.residuals.data();
  acc_t* bias_sums = block.bias_sums.data();
  acc_t* losses = block.losses.data();
  block_dot_products(x, count, W, d, k, dots);
  // Output by output, so that its two sums stay in registers over the block's
  // rows: kept in memory, each row's add waited on the previous row's store.
  for (int64_t j = add_residuals_by_four(batch, block.row_ids, count, k, dots, b, block); j < k; ++j) {
    const acc_t bias = b ? b[j] : acc_t(0);
    acc_t bias_sum = bias_sums[j], loss = losses[j];
    for (int64_t i = 0; i < count; ++i) {
      const acc_t r = dots[i * k + j] + bias - static_cast<acc_t>(batch.y[block.row_ids[i] * k + j]);
      residuals[j * cpu::kRowBlock + i] = r;
      bias_sum += r;
      loss = cpu::multiply_add(acc_t(0.5) * r, r, loss);
    }
    bias_sums[j] = bias_sum;
    losses[j] = loss;
  }
  cpu::add_outer_products(x, residuals, count, d, k, sums, layout.per_output());
}

// How many rows ahead rows are prefetched where they come by row number (the
// one-output path on a minibatch's rows, the epoch's row copies): there no
// hardware prefetcher can guess them.
constexpr int64_t kPrefetchRows = 8;

// Asks for the cache lines of the batch's i-th row. The prefetch helpers are
// always inlined: GCC 12 finds that a function of prefetches alone changes
// nothing (its pure-const analysis) and drops the calls it did not inline:
// once both register paths shared prefetch_ahead, they had no prefetch left.
template <typename scalar_t>
C10_ALWAYS_INLINE void prefetch_row(const Batch<scalar_t>& batch, int64_t i, int64_t d) {
  const int64_t row = batch.rows ? batch.rows[i] : i;
  const char* bytes = reinterpret_cast<const char*>(batch.X + row * d);
  for (int64_t offset = 0; offset < d * static_cast<int64_t>(sizeof(scalar_t)); offset += 64) {
    __builtin_prefetch(bytes + offset);
  }
}

// Rows read in order stream through the hardware prefetcher, which stops at
// the end of each 4 KB page. Where rows tile the pages exactly, the row that
// starts a page asks for the line two pages on, so that the stream there is
// already going when the rows reach it; every row asks for the row 16 ahead.
// Where rows cross page ends the page's line came too late or too early. Two
// threads, 1M rows, against X.amax() beside it (Zen 4 VM, three allocations of
// X per process, processes alternating): one output d = 64 104-110% (78-93%
// with the page's line alone, the earlier choice), d = 48 94-101% (60-76%),
// d = 128 99-104% (63-84%; 93-96% with the rows alone); four outputs d = 64
// 96-107% (68-84% with no software prefetch), d = 48 82-90% with the rows
// alone (64-79% with the page's line too).
constexpr int64_t kPageBytes = 4096, kPrefetchBytes = 2 * kPageBytes, kRowsAhead = 16;

template <typename scalar_t>
inline bool rows_tile_pages(int64_t d) {
  return kPageBytes % (d * static_cast<int64_t>(sizeof(scalar_t))) == 0;
}

// Asks for what row i's successors need: for rows in order as above (tile_pages
// from rows_tile_pages), for rows by number the row kPrefetchRows on.
template <typename scalar_t>
C10_ALWAYS_INLINE void prefetch_ahead(const Batch<scalar_t>& batch, int64_t i, int64_t end, int64_t d,
                                      bool tile_pages) {
  if (batch.rows) {
    if (i + kPrefetchRows < end) prefetch_row(batch, i + kPrefetchRows, d);
    return;
  }
  const int64_t row_bytes = d * static_cast<int64_t>(sizeof(scalar_t));
  const char* row = reinterpret_cast<const char*>(batch.X + i * d);
  const bool starts_page = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % kPageBytes) < row_bytes;
  if (tile_pages && starts_page && (end - i) * row_bytes > kPrefetchBytes) __builtin_prefetch(row + kPrefetchBytes);
  if (i + kRowsAhead < end) prefetch_row(batch, i + kRowsAhead, d);
}

// accumulate_rows for float sums of one output whose features are NV full
// vectors (up to eight) and a tail shorter than a vector: kTail features, or
// d - NV * size where kTail < 0 (a compile-time tail lets the book's two features
// live in registers). Every sum stays in a register from row to row, and each row
// goes straight into its dot product and then, still in L1, into the gradient;
// the general path keeps the sums in memory per block of rows and spent more on
// those blocks' loads, stores and loop control than on the arithmetic. Each sum
// takes the general path's operations in its order (vector lanes, the lane-sum
// tree, then the scalar tails), so the bits are the same.
template <int NV, int kTail, typename scalar_t, typename acc_t>
void accumulate_one_output(const Batch<scalar_t>& batch, int64_t begin, int64_t end, int64_t d, const acc_t* W,
                           const acc_t* b, acc_t* sums) {
  using Vec = at::vec::Vectorized<acc_t>;
  constexpr int64_t vector_columns = NV * Vec::size();
  const int64_t tail = kTail >= 0 ? kTail : d - vector_columns;
  // Under AVX-512, float rows with a run-time tail add its gradient as one
  // masked vector (the same fused multiply-adds, lane by lane): one thread,
  // 8192 rows, d = 72 9.6 -> 8.9 ns a row, d = 100 12.4 -> 10.5, d = 127 22.0
  // -> 18.9. AVX2's masked loads made d = 60 slower (9.3 -> 9.9).
#if defined(CPU_CAPABILITY_AVX512)
  constexpr bool kVectorTail = kTail < 0 && std::is_same_v<scalar_t, float>;
#else
  constexpr bool kVectorTail = false;
#endif
  Vec grad[std::max(NV, 1)];
  Vec tail_grad_vector;
  acc_t tail_weight[Vec::size()], tail_grad[Vec::size()];
  for (int v = 0; v < NV; ++v) grad[v] = Vec::loadu(sums + v * Vec::size());
  for (int64_t c = 0; c < tail; ++c) {
    tail_weight[c] = W[vector_columns + c];
    if constexpr (!kVectorTail) tail_grad[c] = sums[vector_columns + c];
  }
  if constexpr (kVectorTail) {
    if (tail > 0) tail_grad_vector = cpu::load_first(sums + vector_columns, tail);
  }
  const acc_t bias = b ? b[0] : acc_t(0);
  acc_t bias_sum = sums[d];
  acc_t half_squares = 0;
  const bool tile_pages = rows_tile_pages<scalar_t>(d);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t row = batch.rows ? batch.rows[i] : i;
    const scalar_t* x = batch.X + row * d;
    const scalar_t* x_tail = x + vector_columns;
    if constexpr (NV > 0) prefetch_ahead(batch, i, end, d, tile_pages);
    acc_t dot = 0;
    if constexpr (NV > 0) {
      Vec dots(acc_t(0));
      for (int v = 0; v < NV; ++v) {
        dots = at::vec::fmadd(cpu::load_vec<acc_t>(x + v * Vec::size()), Vec::loadu(W + v * Vec::size()), dots);
      }
      dot = cpu::lane_sum(dots);
    }
    for (int64_t c = 0; c < tail; ++c) dot = cpu::multiply_add(static_cast<acc_t>(x_tail[c]), tail_weight[c], dot);
    const acc_t r = dot + bias - static_cast<acc_t>(batch.y[row]);
    bias_sum += r;
    half_squares = cpu::multiply_add(acc_t(0.5) * r, r, half_squares);
    const Vec scale(r);
    for (int v = 0; v < NV; ++v) grad[v] = at::vec::fmadd(scale, cpu::load_vec<acc_t>(x + v * Vec::size()), grad[v]);
    if constexpr (kVectorTail) {
      if (tail > 0) tail_grad_vector = at::vec::fmadd(scale, cpu::load_first(x_tail, tail), tail_grad_vector);
    } else {
      for (int64_t c = 0; c < tail; ++c) tail_grad[c] = cpu::multiply_add(r, static_cast<acc_t>(x_tail[c]), tail_grad[c]);
    }
  }
  for (int v = 0; v < NV; ++v) grad[v].store(sums + v * Vec::size());
  if constexpr (kVectorTail) {
    if (tail > 0) cpu::store_first(tail_grad_vector, sums + vector_columns, tail);
  } else {
    for (int64_t c = 0; c < tail; ++c) sums[vector_columns + c] = tail_grad[c];
  }
  sums[d] = bias_sum;
  acc_t loss = 0;  // as accumulate_rows adds its outputs' losses
  loss += half_squares;
  sums[d + 1] += loss;
}

// accumulate_rows for one output and float sums where a register-resident path
// fits d (the book's few features, or up to eight vectors); false where the
// general path must run.
template <typename scalar_t, typename acc_t>
bool accumulate_one_output_rows(const Batch<scalar_t>& batch, int64_t begin, int64_t end, int64_t d,
                                const acc_t* W, const acc_t* b, acc_t* sums) {
  switch (d / at::vec::Vectorized<acc_t>::size()) {
    case 0:
      switch (d) {
        case 1: return accumulate_one_output<0, 1>(batch, begin, end, d, W, b, sums), true;
        case 2: return accumulate_one_output<0, 2>(batch, begin, end, d, W, b, sums), true;
        case 3: return accumulate_one_output<0, 3>(batch, begin, end, d, W, b, sums), true;
        case 4: return accumulate_one_output<0, 4>(batch, begin, end, d, W, b, sums), true;
        default: return false;
      }
    case 1: return accumulate_one_output<1, -1>(batch, begin, end, d, W, b, sums), true;
    case 2: return accumulate_one_output<2, -1>(batch, begin, end, d, W, b, sums), true;
    case 3: return accumulate_one_output<3, -1>(batch, begin, end, d, W, b, sums), true;
    case 4: return accumulate_one_output<4, -1>(batch, begin, end, d, W, b, sums), true;
    case 5: return accumulate_one_output<5, -1>(batch, begin, end, d, W, b, sums), true;
    case 6: return accumulate_one_output<6, -1>(batch, begin, end, d, W, b, sums), true;
    case 7: return accumulate_one_output<7, -1>(batch, begin, end, d, W, b, sums), true;
    case 8: return accumulate_one_output<8, -1>(batch, begin, end, d, W, b, sums), true;
    default: return false;
  }
}

#if defined(CPU_CAPABILITY_AVX512)
// The sums of accumulate_four_outputs below, in registers: float rows of four
// outputs whose features are NV whole AVX-512 vectors.
template <int NV>
struct FourOutputSums {
  static constexpr int kOutputs = 4;
  static constexpr int64_t kFeatures = NV * 16;
  static constexpr ParamSums kLayout{kFeatures, kOutputs};

  FourOutputSums(const float* W, const float* b, const float* sums)
      : W(W), bias(b ? _mm_loadu_ps(b) : _mm_setzero_ps()), loss(_mm_setzero_ps()) {
    alignas(16) float bias_sums[kOutputs];
    for (int j = 0; j < kOutputs; ++j) {
      const float* output_sums = sums + j * kLayout.per_output();
      for (int v = 0; v < NV; ++v) grad[j][v] = _mm512_loadu_ps(output_sums + v * 16);
      bias_sums[j] = output_sums[kFeatures];
    }
    bias_sum = _mm_load_ps(bias_sums);
  }

  // Row x's four residuals against its targets y, added into the bias and loss
  // sums; the row's features stay in `features` for its gradient.
  __m128 residuals(const float* x, const float* y, __m512 (&features)[NV]) {
    at::vec::Vectorized<float> dots[kOutputs];
    for (int j = 0; j < kOutputs; ++j) dots[j] = _mm512_setzero_ps();
    for (int v = 0; v < NV; ++v) {
      features[v] = _mm512_loadu_ps(x + v * 16);
      for (int j = 0; j < kOutputs; ++j) {
        dots[j] = _mm512_fmadd_ps(features[v], _mm512_loadu_ps(W + j * kFeatures + v * 16), dots[j]);
      }
    }
    return residuals_by_four(cpu::lane_sums_of_four(dots), bias, _mm_loadu_ps(y), bias_sum, loss);
  }

  // Adds a row's share of the weight gradient: its features scaled by its residuals.
  void add_gradient(const __m512 (&features)[NV], __m128 residuals) {
    const __m512 scales[kOutputs] = {
        _mm512_broadcastss_ps(residuals), _mm512_broadcastss_ps(_mm_shuffle_ps(residuals, residuals, 0x55)),
        _mm512_broadcastss_ps(_mm_shuffle_ps(residuals, residuals, 0xAA)),
        _mm512_broadcastss_ps(_mm_shuffle_ps(residuals, residuals, 0xFF))};
    for (int j = 0; j < kOutputs; ++j) {
      for (int v = 0; v < NV; ++v) grad[j][v] = _mm512_fmadd_ps(scales[j], features[v], grad[j][v]);
    }
  }

  // Writes the sums back as accumulate_rows leaves them.
  void store(float* sums) const {
    alignas(16) float bias_sums[kOutputs], losses[kOutputs];
    _mm_store_ps(bias_sums, bias_sum);
    _mm_store_ps(losses, loss);
    float loss_sum = 0;  // as accumulate_rows adds its outputs' losses
    for (int j = 0; j < kOutputs; ++j) {
      float* output_sums = sums + j * kLayout.per_output();
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(output_sums + v * 16, grad[j][v]);
      output_sums[kFeatures] = bias_sums[j];
      loss_sum += losses[j];
    }
    sums[kLayout.loss()] += loss_sum;
  }

  const float* W;
  __m128 bias, bias_sum, loss;
  __m512 grad[kOutputs][NV];
};

// accumulate_rows for float rows of four outputs whose features are two to
// four whole AVX-512 vectors. As for one output, the gradient sums stay in
// registers from row to row, and each row goes from its dot products through
// its residuals into the gradient; the block path below stores and reloads the
// residuals and the sums every 24 rows, and runs the block's dot products and
// then its gradient. 1M rows, two threads, against X.amax() beside it (Zen 4
// VM, three allocations of X per process): d = 64 72-81% -> 81-99%, d = 48
// 76-82% -> 84-90%, d = 32 the same (60-86%). In cache (one thread, 8192 x 64
// rows) 12.3 -> 11.1 ns a row: ~39 cycles at 3.5 GHz, of which its 32 zmm fused
// multiply-adds take 32. One vector (d = 16) was no faster (in cache 5.6 -> 6.1
// ns a row). Features past whole vectors are left to the block path: their dot
// products' fused multiply-adds, one chain per row, made d = 40 and 60 slower
// (1M rows: 7.0-7.5 -> 8.7-9.0 ms, 12 -> 12.5 ms). Every sum takes the block
// path's operations in its order (the dot products' lane-sum tree, the
// residuals lane by lane, the gradient's fused multiply-adds row by row), so
// the bits are the same.
template <int NV>
void accumulate_four_outputs(const Batch<float>& batch, int64_t begin, int64_t end, const float* W, const float* b,
                             float* sums) {
  constexpr int64_t d = FourOutputSums<NV>::kFeatures;
  FourOutputSums<NV> four(W, b, sums);
  // Each row's gradient is added after the next row's residuals, which do not
  // wait on it: in program order those residuals' long chain (dot products,
  // lane sums) comes first, and the gradient's inputs are ready; its features
  // wait in registers. In cache, d = 64: 13.7 ns a row with each row's gradient
  // right after its residuals, 11.6 with the features read again from L1, 11.1.
  const auto prefetch_then_number = [&](int64_t i) {
    prefetch_ahead(batch, i, end, d, rows_tile_pages<float>(d));
    return batch.rows ? batch.rows[i] : i;
  };
  if (begin < end) {
    __m512 previous[NV];
    int64_t row = prefetch_then_number(begin);
    __m128 previous_residuals = four.residuals(batch.X + row * d, batch.y + row * 4, previous);
    for (int64_t i = begin + 1; i < end; ++i) {
      __m512 features[NV];
      row = prefetch_then_number(i);
      const __m128 residuals = four.residuals(batch.X + row * d, batch.y + row * 4, features);
      four.add_gradient(previous, previous_residuals);
      for (int v = 0; v < NV; ++v) previous[v] = features[v];
      previous_residuals = residuals;
    }
    four.add_gradient(previous, previous_residuals);
  }
  four.store(sums);
}
#endif

// accumulate_rows for four outputs where accumulate_four_outputs fits d (float
// rows, an AVX-512 build, 32, 48 or 64 features); false where another path must run.
template <typename scalar_t, typename acc_t>
bool accumulate_four_output_rows(const Batch<scalar_t>& batch, int64_t begin, int64_t end, int64_t d,
                                 const acc_t* W, const acc_t* b, acc_t* sums) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    switch (d) {
      case 32: return accumulate_four_outputs<2>(batch, begin, end, W, b, sums), true;
      case 48: return accumulate_four_outputs<3>(batch, begin, end, W, b, sums), true;
      case 64: return accumulate_four_outputs<4>(batch, begin, end, W, b, sums), true;
      default: return false;
    }
  }
#endif
  return false;
}

// Asks for the rows of the block after [first, first + count) when there are few
// outputs: then a row's arithmetic is short enough that the hardware prefetcher
// fell behind on the general path (1M x 64 -> 4: 33 -> 29 ms on one thread with
// the next block's rows asked for); with 16 outputs it measured no gain, and on
// the four-output path neither did asking 1-5 blocks or 12-48 rows ahead.
template <typename scalar_t>
C10_ALWAYS_INLINE void prefetch_next_block(const Batch<scalar_t>& batch, int64_t first, int64_t count, int64_t end,
                                           int64_t d, int64_t k) {
  if (k > 4) return;
  for (int64_t i = first + count; i < std::min(end, first + 2 * count); ++i) prefetch_row(batch, i, d);
}

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
// Rows per block of the path below: whole groups of rows for the dot products
// (kDotRows), and each gradient sum loaded and stored once per 24 rows. Against 12 rows,
// single-threaded on a cache-resident X: 17.0 -> 15.9 ns a row with 4 outputs,
// 61 -> 58 with 16. 48 rows gained 1% more with 16 but lost 10% with 4 on 1M rows,
// where the next block's prefetch (48 rows at once) got ahead of the memory.
constexpr int64_t kBlockByFour = 24;

// The residual loop of accumulate_block_by_four below for whole vectors of
// outputs (a row's 16 outputs in one AVX-512 register): the same operations,
// lane by lane, as residuals_by_four, with a quarter (AVX-512) or half (AVX2) of
// the instructions. AVX-512, 16 outputs: 45.0 -> 43.8 ns a row on one thread
// (16384 x 64 rows in cache); on 1M x 64 rows from memory, within the bench's
// run-to-run spread. Returns how many outputs it covered.
inline int64_t add_residuals_by_vector(const Batch<float>& batch, const int64_t* row_ids, int64_t rows, int64_t k,
                                       const float* b, float* residuals, BlockScratch<float, float>& block) {
  using Vec = at::vec::Vectorized<float>;
  int64_t j = 0;
  for (; j + Vec::size() <= k; j += Vec::size()) {
    const Vec bias = b ? Vec::loadu(b + j) : Vec(0.f);
    Vec bias_sum = Vec::loadu(block.bias_sums.data() + j);
    Vec loss = Vec::loadu(block.losses.data() + j);
    for (int64_t i = 0; i < rows; ++i) {
      float* residual = residuals + i * k + j;
      const Vec r = (Vec::loadu(residual) + bias) - Vec::loadu(batch.y + row_ids[i] * k + j);
      bias_sum = bias_sum + r;
      loss = at::vec::fmadd(Vec(0.5f) * r, r, loss);
      r.store(residual);
    }
    bias_sum.store(block.bias_sums.data() + j);
    loss.store(block.losses.data() + j);
  }
  return j;
}

// accumulate_block for float rows, outputs in fours and at least one vector of
// features (the 4- and 16-output steps), on kRows rows (> 0: a full block, so
// that the gradient tiles unroll) or `count`. Every sum takes the general
// path's operations in its order, so the bits are the same; the bookkeeping
// is lighter: the dot products turn into residuals in place, a row's four
// outputs in one SSE register, with no second buffer and no transposition.
template <int kRows>
void accumulate_block_by_four(const Batch<float>& batch, const float* const* x, const int64_t* row_ids,
                              int64_t count, const ParamSums& layout, const float* W, const float* b, float* sums,
                              BlockScratch<float, float>& block) {
  const int64_t d = layout.features, k = layout.outputs, rows = kRows > 0 ? kRows : count;
  float* residuals = block.residuals.data();  // residuals[i * k + j]: output j of row i
  // block_dot_products' loop, written out here where the row count is known at
  // compile time: through the helper the 16-output step on 1M x 64 rows ran
  // 27 -> 29.5 ms (AVX-512, two threads).
  int64_t i = 0;
  for (; i + kDotRows <= rows; i += kDotRows) cpu::dot_all_rows<kDotRows>(x + i, W, d, k, residuals + i * k, k);
  for (; i + 2 <= rows; i += 2) cpu::dot_all_rows<2>(x + i, W, d, k, residuals + i * k, k);
  if (i < rows) cpu::dot_all_rows(x[i], W, d, k, residuals + i * k);
  int64_t j = add_residuals_by_vector(batch, row_ids, rows, k, b, residuals, block);
  for (; j < k; j += 4) {
    const __m128 bias = b ? _mm_loadu_ps(b + j) : _mm_setzero_ps();
    __m128 bias_sum = _mm_loadu_ps(block.bias_sums.data() + j);
    __m128 loss = _mm_loadu_ps(block.losses.data() + j);
    for (int64_t i = 0; i < rows; ++i) {
      float* residual = residuals + i * k + j;
      const __m128 y = _mm_loadu_ps(batch.y + row_ids[i] * k + j);
      _mm_storeu_ps(residual, residuals_by_four(_mm_loadu_ps(residual), bias, y, bias_sum, loss));
    }
    _mm_storeu_ps(block.bias_sums.data() + j, bias_sum);
    _mm_storeu_ps(block.losses.data() + j, loss);
  }
  for (int64_t j = 0; j < k; j += 4) {
    float* output_sums = sums + j * layout.per_output();
    const int64_t col = cpu::add_outer_vectors<4, kRows>(x, residuals + j, 1, k, rows, d, output_sums,
                                                         layout.per_output());
    cpu::add_outer_tail<4>(x, residuals + j, 1, k, rows, col, d, output_sums, layout.per_output());
  }
}
#endif

// accumulate_rows' blocks through accumulate_block_by_four where that path
// fits (float rows, outputs in fours, at least one vector of features, an AVX2
// or AVX-512 build); false where the general path must run. Features beyond
// whole vectors once sent the AVX-512 build down the general path, 3-5x slower
// than the AVX2 build on the same CPU (d = 72: 4 outputs 75 against 15 ns a row).
template <typename scalar_t, typename acc_t>
bool accumulate_blocks_by_four(const Batch<scalar_t>& batch, int64_t begin, int64_t end, const ParamSums& layout,
                               const acc_t* W, const acc_t* b, BlockScratch<scalar_t, acc_t>& block, acc_t* sums) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t d = layout.features, k = layout.outputs;
    if (k % 4 != 0 || d < at::vec::Vectorized<float>::size()) return false;
    block.residuals.resize(static_cast<size_t>(k * kBlockByFour));
    int64_t row_ids[kBlockByFour];
    const float* x[kBlockByFour];
    for (int64_t first = begin; first < end; first += kBlockByFour) {
      const int64_t count = std::min(kBlockByFour, end - first);
      prefetch_next_block(batch, first, count, end, d, k);
      for (int64_t i = 0; i < count; ++i) {
        row_ids[i] = batch.rows ? batch.rows[first + i] : first + i;
        x[i] = batch.X + row_ids[i] * d;
      }
      if (count == kBlockByFour) {
        accumulate_block_by_four<kBlockByFour>(batch, x, row_ids, count, layout, W, b, sums, block);
      } else {
        accumulate_block_by_four<0>(batch, x, row_ids, count, layout, W, b, sums, block);
      }
    }
    return true;
  }
#endif
  return false;
}

// accumulate_rows' blocks on the general path.
template <typename scalar_t, typename acc_t>
void accumulate_blocks(const Batch<scalar_t>& batch, int64_t begin, int64_t end, const ParamSums& layout,
                       const acc_t* W, const acc_t* b, BlockScratch<scalar_t, acc_t>& block, acc_t* sums) {
  using cpu::kRowBlock;
  const int64_t d = layout.features, k = layout.outputs;
  block.dots.resize(static_cast<size_t>(k * kRowBlock));
  block.residuals.resize(static_cast<size_t>(k * kRowBlock));
  // Half and bfloat16 rows: with one output they are read in place (converted
  // in registers); with several each row is read twice per output group, and
  // converting the block once into float is faster.
  const bool convert_block = !std::is_same_v<scalar_t, acc_t> && k > 1;
  if (convert_block) block.converted.resize(static_cast<size_t>(kRowBlock * d));
  for (int64_t first = begin; first < end; first += kRowBlock) {
    const int64_t count = std::min(kRowBlock, end - first);
    prefetch_next_block(batch, first, count, end, d, k);
    for (int64_t i = 0; i < count; ++i) {
      block.row_ids[i] = batch.rows ? batch.rows[first + i] : first + i;
      block.x[i] = batch.X + block.row_ids[i] * d;
    }
    if (convert_block) {
      for (int64_t i = 0; i < count; ++i) {
        acc_t* converted = block.converted.data() + i * d;
        cpu::convert_to_acc(block.x[i], d, converted);
        block.x_acc[i] = converted;
      }
      accumulate_block(batch, block.x_acc, count, layout, W, b, sums, block);
    } else {
      accumulate_block(batch, block.x, count, layout, W, b, sums, block);
    }
  }
}

template <typename scalar_t, typename acc_t>
void accumulate_rows(const Batch<scalar_t>& batch, int64_t begin, int64_t end, const ParamSums& layout,
                     const acc_t* W, const acc_t* b, acc_t* sums, BlockScratch<scalar_t, acc_t>& block) {
  const int64_t d = layout.features, k = layout.outputs;
  // Not for float64: there the compiled general path rounds these sums one way
  // in some rows and the other in others (its loops were vectorised in part),
  // which the paths for one output would not reproduce bit for bit.
  if constexpr (std::is_same_v<acc_t, float>) {
    if (k == 1 && accumulate_one_output_rows(batch, begin, end, d, W, b, sums)) return;
    if (k == 4 && accumulate_four_output_rows(batch, begin, end, d, W, b, sums)) return;
  }
  block.bias_sums.resize(static_cast<size_t>(k));
  block.losses.assign(static_cast<size_t>(k), acc_t(0));
  for (int64_t j = 0; j < k; ++j) block.bias_sums[j] = sums[j * layout.per_output() + d];
  if (!accumulate_blocks_by_four(batch, begin, end, layout, W, b, block, sums)) {
    accumulate_blocks(batch, begin, end, layout, W, b, block, sums);
  }
  acc_t loss = 0;
  for (int64_t j = 0; j < k; ++j) {
    sums[j * layout.per_output() + d] = block.bias_sums[j];
    loss += block.losses[j];
  }
  sums[layout.loss()] += loss;
}

// totals = the loss and gradient sums over the whole batch (not yet divided by n).
template <typename scalar_t, typename acc_t>
void batch_sums(const Batch<scalar_t>& batch, const ParamSums& layout, const acc_t* W, const acc_t* b,
                Scratch<scalar_t, acc_t>& scratch, acc_t* totals) {
  const int64_t width = layout.count_with_loss();
  const int64_t chunks = cpu::row_chunks(batch.n, width);
  std::fill(totals, totals + width, acc_t(0));
  if (chunks == 1) {
    accumulate_rows(batch, 0, batch.n, layout, W, b, totals, scratch.block);
    return;
  }
  const int64_t rows_per_chunk = cpu::ceil_div(batch.n, chunks);
  scratch.partials.assign(static_cast<size_t>(chunks * width), acc_t(0));
  acc_t* partials = scratch.partials.data();
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    BlockScratch<scalar_t, acc_t> block;
    for (int64_t c = chunk_begin; c < chunk_end; ++c) {
      accumulate_rows(batch, c * rows_per_chunk, std::min(batch.n, (c + 1) * rows_per_chunk), layout, W, b,
                      partials + c * width, block);
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t e = 0; e < width; ++e) totals[e] += partials[c * width + e];
  }
}

// The model's parameters and momentum buffers, contiguous, updated in place.
template <typename scalar_t>
struct Model {
  scalar_t* weight;
  scalar_t* bias;  // nullptr without a bias
  scalar_t* weight_momentum;
  scalar_t* bias_momentum;
  ParamSums layout;
};

// `count` values at p as acc_t: p itself when the types agree, else a float copy.
template <typename acc_t, typename scalar_t>
const acc_t* values_as(const scalar_t* p, int64_t count, std::vector<acc_t>& storage) {
  if (p == nullptr) return nullptr;
  return cpu::row_as<acc_t>(p, count, storage);
}

template <typename scalar_t, typename acc_t>
void sgd_update_all(scalar_t* param, scalar_t* buf, const acc_t* grad_sum, int64_t count, int64_t stride,
                    acc_t inv_n, bool first_step, const SgdScalars<acc_t>& s) {
  for (int64_t e = 0; e < count; ++e) {
    acc_t b = buf && !first_step ? static_cast<acc_t>(buf[e]) : acc_t(0);
    param[e] = static_cast<scalar_t>(sgd_update(static_cast<acc_t>(param[e]), grad_sum[e * stride] * inv_n, b,
                                                first_step, s));
    if (buf) buf[e] = static_cast<scalar_t>(b);
  }
}

// One step on one minibatch; returns the minibatch loss before the update.
template <typename scalar_t>
at::opmath_type<scalar_t> step_on_batch(const Batch<scalar_t>& batch, const Model<scalar_t>& model,
                                        Scratch<scalar_t, at::opmath_type<scalar_t>>& scratch,
                                        std::vector<at::opmath_type<scalar_t>>& totals, bool first_step,
                                        const SgdScalars<at::opmath_type<scalar_t>>& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const ParamSums& layout = model.layout;
  const acc_t* W = values_as<acc_t>(model.weight, layout.outputs * layout.features, scratch.weight);
  const acc_t* b = values_as<acc_t>(model.bias, layout.outputs, scratch.bias);
  batch_sums(batch, layout, W, b, scratch, totals.data());
  const acc_t inv_n = acc_t(1) / static_cast<acc_t>(batch.n);
  const bool momentum = s.momentum != acc_t(0);
  for (int64_t j = 0; j < layout.outputs; ++j) {
    sgd_update_all(model.weight + j * layout.features, momentum ? model.weight_momentum + j * layout.features : nullptr,
                   totals.data() + j * layout.per_output(), layout.features, 1, inv_n, first_step, s);
  }
  if (model.bias) {
    sgd_update_all(model.bias, momentum ? model.bias_momentum : nullptr, totals.data() + layout.features,
                   layout.outputs, layout.per_output(), inv_n, first_step, s);
  }
  return totals[layout.loss()] * inv_n;
}

// An epoch reads its rows through its indices, scattered over X. When X is far
// larger than the caches each row is a cache and TLB miss, and the one thread
// that runs the minibatches in turn would wait for them a row at a time. Such an
// epoch instead has the other threads copy the rows, a block of minibatches at a
// time and up to kGatherSlots blocks ahead, into buffers the steps then read in
// order: the same values in the same order, so the same bits.
constexpr int64_t kGatherMinBytes = 8 << 20;     // smaller X is read in place
constexpr int64_t kGatherBlockBytes = 512 << 10;  // rows copied per block: within L2
constexpr int64_t kGatherSlots = 3;               // blocks copied ahead of the steps, at most
constexpr int64_t kGatherGrain = 64;              // rows a thread claims at a time

// Whether X is worth gathering: large, minibatches that fit a block, rows not already in order.
inline bool gathers_rows(const at::Tensor& X, const int64_t* ids, int64_t total_rows, int64_t batch_size) {
  if (!ids || X.nbytes() < kGatherMinBytes || batch_size * X.size(1) * X.element_size() > kGatherBlockBytes) {
    return false;
  }
  for (int64_t i = 0; i < total_rows; ++i) {
    if (ids[i] != i) return true;
  }
  return false;
}

// The epoch's rows, copied block by block into a ring of kGatherSlots buffers by
// any number of threads. Block b's rows are ids[b * block_rows, ...) and live in
// slot b % kGatherSlots. The steps' thread only ever waits for rows another thread
// is copying at that moment, and copiers only wait for the steps to free a slot,
// so one thread alone (set_num_threads(1), or inside another parallel region)
// gathers and runs everything itself.
template <typename scalar_t>
class GatheredRows {
 public:
  GatheredRows(const scalar_t* X, const scalar_t* y, const int64_t* ids, int64_t total_rows, int64_t d, int64_t k,
               int64_t block_rows)
      : X_(X), y_(y), ids_(ids), total_rows_(total_rows), d_(d), k_(k), block_rows_(block_rows),
        blocks_(cpu::ceil_div(total_rows, block_rows)), claimed_(static_cast<size_t>(blocks_)),
        copied_(static_cast<size_t>(blocks_)) {
    for (auto& slot : slots_) {
      slot.X.resize(static_cast<size_t>(block_rows * d));
      slot.y.resize(static_cast<size_t>(block_rows * k));
    }
  }

  // Block b's copied rows of X and y (row i of the block at X + i * d), once all
  // of them are there: copies what no thread has claimed yet, then waits for the rest.
  std::pair<const scalar_t*, const scalar_t*> block(int64_t b) {
    copy_block(b);
    while (copied_[b].load(std::memory_order_acquire) < rows_of(b)) std::this_thread::yield();
    const Slot& slot = slots_[b % kGatherSlots];
    return {slot.X.data(), slot.y.data()};
  }

  // Block b's buffer may be refilled: the steps are done with it.
  void release(int64_t b) { released_.store(b + 1, std::memory_order_release); }

  // Stops the copiers early (the steps failed).
  void abandon() { abandoned_.store(true, std::memory_order_release); }

  // A copier's work: every block in turn, each once its slot is free.
  void copy_all() {
    for (int64_t b = 0; b < blocks_; ++b) {
      while (b >= released_.load(std::memory_order_acquire) + kGatherSlots) {
        if (abandoned_.load(std::memory_order_acquire)) return;
        std::this_thread::yield();
      }
      copy_block(b);
    }
  }

 private:
  struct Slot {
    std::vector<scalar_t> X, y;
  };

  int64_t rows_of(int64_t b) const { return std::min(block_rows_, total_rows_ - b * block_rows_); }

  // Copies pieces of block b claimed from its counter until none are left.
  void copy_block(int64_t b) {
    const int64_t count = rows_of(b);
    const int64_t* ids = ids_ + b * block_rows_;
    Slot& slot = slots_[b % kGatherSlots];
    const size_t row_bytes = sizeof(scalar_t) * static_cast<size_t>(d_);
    for (int64_t begin = claimed_[b].fetch_add(kGatherGrain); begin < count;
         begin = claimed_[b].fetch_add(kGatherGrain)) {
      const int64_t end = std::min(count, begin + kGatherGrain);
      for (int64_t i = begin; i < end; ++i) {
        if (i + kPrefetchRows < end) {
          const char* ahead = reinterpret_cast<const char*>(X_ + ids[i + kPrefetchRows] * d_);
          for (size_t byte = 0; byte < row_bytes; byte += 64) __builtin_prefetch(ahead + byte);
        }
        std::memcpy(slot.X.data() + i * d_, X_ + ids[i] * d_, row_bytes);
        std::memcpy(slot.y.data() + i * k_, y_ + ids[i] * k_, sizeof(scalar_t) * static_cast<size_t>(k_));
      }
      copied_[b].fetch_add(end - begin, std::memory_order_release);
    }
  }

  const scalar_t* X_;
  const scalar_t* y_;
  const int64_t* ids_;
  const int64_t total_rows_, d_, k_, block_rows_, blocks_;
  Slot slots_[kGatherSlots];
  std::vector<std::atomic<int64_t>> claimed_;  // per block: rows claimed by copiers
  std::vector<std::atomic<int64_t>> copied_;   // per block: rows copied
  std::atomic<int64_t> released_{0};          // blocks the steps are done with
  std::atomic<bool> abandoned_{false};
};

}  // namespace

void CPU_CAPABILITY::CpuKernels::linreg_steps(const LinregTensors& t, const at::Tensor& rows, int64_t batch_size,
                                            const StepArgs& args, const at::Tensor& losses) {
  const int64_t total_rows = rows.defined() ? rows.numel() : t.X.size(0);
  const int64_t steps = cpu::ceil_div(total_rows, batch_size);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.X.scalar_type(), "fused_linreg.linreg_step_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto data_or_null = [](const std::optional<at::Tensor>& p) {
      return p.has_value() ? p->mutable_data_ptr<scalar_t>() : nullptr;
    };
    const Model<scalar_t> model{t.weight.mutable_data_ptr<scalar_t>(), data_or_null(t.bias),
                                data_or_null(t.weight_momentum), data_or_null(t.bias_momentum),
                                ParamSums{t.X.size(1), t.weight.size(0)}};
    Scratch<scalar_t, acc_t> scratch;
    std::vector<acc_t> totals(static_cast<size_t>(model.layout.count_with_loss()));
    const SgdScalars<acc_t> s = sgd_scalars<acc_t>(args.lr, args.opt);
    const int64_t* row_ids = rows.defined() ? rows.const_data_ptr<int64_t>() : nullptr;
    const scalar_t* X_data = t.X.const_data_ptr<scalar_t>();
    const scalar_t* y_data = t.y.const_data_ptr<scalar_t>();
    const int64_t d = model.layout.features, k = model.layout.outputs;
    scalar_t* loss_out = losses.mutable_data_ptr<scalar_t>();
    // Steps [step_begin, step_end), reading minibatch rows through `batch_at(first row, rows)`.
    const auto run_steps = [&](int64_t step_begin, int64_t step_end, const auto& batch_at) {
      for (int64_t step = step_begin; step < step_end; ++step) {
        const int64_t begin = step * batch_size;
        const Batch<scalar_t> batch = batch_at(begin, std::min(batch_size, total_rows - begin));
        const acc_t loss = step_on_batch(batch, model, scratch, totals, args.is_first_step && step == 0, s);
        loss_out[step] = static_cast<scalar_t>(loss);
      }
    };
    if (!gathers_rows(t.X, row_ids, total_rows, batch_size)) {
      run_steps(0, steps, [&](int64_t begin, int64_t n) {
        return row_ids ? Batch<scalar_t>{X_data, y_data, row_ids + begin, n}
                       : Batch<scalar_t>{X_data + begin * d, y_data + begin * k, nullptr, n};
      });
      return;
    }
    const int64_t block_steps = kGatherBlockBytes / (batch_size * d * t.X.element_size());
    const int64_t block_rows = block_steps * batch_size;
    GatheredRows<scalar_t> gathered(X_data, y_data, row_ids, total_rows, d, k, block_rows);
    // Task 0 runs the steps; every other task copies rows (a thread running both runs task 0 first).
    at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t begin, int64_t /*end*/) {
      if (begin > 0) {
        gathered.copy_all();
        return;
      }
      try {
        for (int64_t b = 0, step = 0; step < steps; ++b, step += block_steps) {
          const std::pair<const scalar_t*, const scalar_t*> block = gathered.block(b);
          const int64_t first = b * block_rows;
          run_steps(step, std::min(steps, step + block_steps), [&](int64_t row, int64_t n) {
            return Batch<scalar_t>{block.first + (row - first) * d, block.second + (row - first) * k, nullptr, n};
          });
          gathered.release(b);
        }
      } catch (...) {
        gathered.abandon();
        throw;
      }
    });
  });
}

void CPU_CAPABILITY::CpuKernels::linreg_grad(const LinregTensors& t, const at::Tensor& loss,
                                           const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  const int64_t d = t.X.size(1), k = t.weight.size(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.X.scalar_type(), "fused_linreg.linreg_grad", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ParamSums layout{d, k};
    Scratch<scalar_t, acc_t> scratch;
    std::vector<acc_t> totals(static_cast<size_t>(layout.count_with_loss()));
    const Batch<scalar_t> batch{t.X.const_data_ptr<scalar_t>(), t.y.const_data_ptr<scalar_t>(), nullptr, t.X.size(0)};
    const acc_t* W = values_as<acc_t>(t.weight.const_data_ptr<scalar_t>(), k * d, scratch.weight);
    const acc_t* b = values_as<acc_t>(t.bias ? t.bias->const_data_ptr<scalar_t>() : nullptr, k, scratch.bias);
    batch_sums(batch, layout, W, b, scratch, totals.data());
    const acc_t inv_n = acc_t(1) / static_cast<acc_t>(batch.n);
    scalar_t* gw = grad_weight.mutable_data_ptr<scalar_t>();
    scalar_t* gb = grad_bias.mutable_data_ptr<scalar_t>();
    for (int64_t e = 0; e < layout.count(); ++e) {
      const int64_t j = layout.output_of(e), c = layout.column_of(e);
      (layout.is_bias(e) ? gb[j] : gw[j * d + c]) = static_cast<scalar_t>(totals[e] * inv_n);
    }
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(totals[layout.loss()] * inv_n);
  });
}

}  // namespace fused_linreg
