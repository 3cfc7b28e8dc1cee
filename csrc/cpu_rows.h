// Small helpers of the CPU kernels: rows converted to the accumulation type,
// vectorised dot products and axpy, and fixed-order horizontal sums. Every
// reduction here sums in an order that depends only on the lengths involved,
// never on the thread count.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fused_linreg::cpu {

using at::vec::Vectorized;

// Returns `src` viewed as acc_t: the pointer itself when the types agree,
// otherwise `scratch` filled with the converted values.
template <typename acc_t, typename scalar_t>
inline const acc_t* row_as(const scalar_t* src, int64_t len, std::vector<acc_t>& scratch) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return src;
  } else {
    scratch.resize(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) scratch[i] = static_cast<acc_t>(src[i]);
    return scratch.data();
  }
}

template <typename scalar_t, typename acc_t>
inline void store_row(const acc_t* src, int64_t len, scalar_t* dst) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    if (len == 0) return;  // an empty row's pointers may be null, which memcpy must not get
    std::memcpy(dst, src, static_cast<size_t>(len) * sizeof(acc_t));
  } else {
    for (int64_t i = 0; i < len; ++i) dst[i] = static_cast<scalar_t>(src[i]);
  }
}

template <typename acc_t>
inline acc_t lane_sum(const Vectorized<acc_t>& v) {
  alignas(64) acc_t lanes[Vectorized<acc_t>::size()];
  v.store(lanes);
  acc_t sum = 0;
  for (int i = 0; i < Vectorized<acc_t>::size(); ++i) sum += lanes[i];
  return sum;
}

// out[j] = dot(x, w + j * len) for NB consecutive weight rows, reading x once.
template <int NB, typename acc_t>
inline void dot_rows(const acc_t* x, const acc_t* w, int64_t len, acc_t* out) {
  using Vec = Vectorized<acc_t>;
  Vec acc[NB];
  for (int j = 0; j < NB; ++j) acc[j] = Vec(acc_t(0));
  int64_t d = 0;
  for (; d + Vec::size() <= len; d += Vec::size()) {
    const Vec xv = Vec::loadu(x + d);
    for (int j = 0; j < NB; ++j) acc[j] = at::vec::fmadd(xv, Vec::loadu(w + j * len + d), acc[j]);
  }
  for (int j = 0; j < NB; ++j) {
    acc_t sum = d > 0 ? lane_sum(acc[j]) : acc_t(0);
    for (int64_t t = d; t < len; ++t) sum += x[t] * w[j * len + t];
    out[j] = sum;
  }
}

// out[j] = dot(x, w_j) for every row j < rows of w, in blocks of four rows.
template <typename acc_t>
inline void dot_all_rows(const acc_t* x, const acc_t* w, int64_t len, int64_t rows, acc_t* out) {
  int64_t j = 0;
  for (; j + 4 <= rows; j += 4) dot_rows<4>(x, w + j * len, len, out + j);
  switch (rows - j) {
    case 3: dot_rows<3>(x, w + j * len, len, out + j); break;
    case 2: dot_rows<2>(x, w + j * len, len, out + j); break;
    case 1: dot_rows<1>(x, w + j * len, len, out + j); break;
    default: break;
  }
}

// y += alpha * x
template <typename acc_t>
inline void axpy(acc_t alpha, const acc_t* x, int64_t len, acc_t* y) {
  using Vec = Vectorized<acc_t>;
  const Vec a(alpha);
  int64_t d = 0;
  for (; d + Vec::size() <= len; d += Vec::size()) {
    at::vec::fmadd(a, Vec::loadu(x + d), Vec::loadu(y + d)).store(y + d);
  }
  for (; d < len; ++d) y[d] += alpha * x[d];
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Sums over rows run as partial sums over fixed row ranges ("chunks") added in
// chunk order afterwards, so the result does not depend on how chunks map to
// threads. The count depends on the shape only: `width` accumulators per chunk.
// A chunk covers at least ~64K accumulator updates, so small batches (the
// book's 10 x 2) stay on one thread with no parallel region at all.
inline int64_t row_chunks(int64_t rows, int64_t width) {
  constexpr int64_t kMaxChunks = 64;
  constexpr int64_t kMinUpdatesPerChunk = int64_t{1} << 16;
  constexpr int64_t kMaxPartialElements = int64_t{1} << 22;
  const int64_t min_rows_per_chunk = std::max<int64_t>(256, ceil_div(kMinUpdatesPerChunk, std::max<int64_t>(width, 1)));
  const int64_t by_rows = ceil_div(rows, min_rows_per_chunk);
  const int64_t by_memory = kMaxPartialElements / std::max<int64_t>(width, 1);
  return std::max<int64_t>(1, std::min({kMaxChunks, by_rows, by_memory}));
}

}  // namespace fused_linreg::cpu
