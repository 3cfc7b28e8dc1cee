// Small helpers of the CPU kernels: rows read as the accumulation type,
// vectorised dot products and scaled row sums, and fixed-order horizontal sums. Every
// reduction here sums in an order that depends only on the lengths involved,
// never on the thread count.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fused_linreg::cpu {
// In the namespace of the CPU capability this file is compiled for: the same
// helper compiled for AVX-512 and for any x86-64 must not be one symbol.
inline namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// a * b + c as the compiled general path rounds it: the compiler contracts
// that expression into one fused multiply-add (one rounding) where the build
// targets FMA, but not everywhere (the one-output path lost it in a loop, the
// dot products' tails once their sums moved into locals).
template <typename T>
inline T multiply_add(T a, T b, T c) {
#ifdef __FMA__
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// dst[i] = src[i] as acc_t. Half and bfloat16 rows convert a vector at a time:
// one element at a time the conversion cost more than the kernels' arithmetic.
template <typename scalar_t, typename acc_t>
inline void convert_to_acc(const scalar_t* src, int64_t len, acc_t* dst) {
  int64_t i = 0;
  if constexpr (std::is_same_v<acc_t, float> && at::vec::is_reduced_floating_point_v<scalar_t>) {
    for (; i + Vectorized<float>::size() <= len; i += Vectorized<float>::size()) {
      Vectorized<float> converted;
      at::vec::load_to_float(src + i, converted);
      converted.store(dst + i);
    }
  }
  for (; i < len; ++i) dst[i] = static_cast<acc_t>(src[i]);
}

// Vectorized<acc_t>::size() elements from p as acc_t. Half and bfloat16 rows
// are read where they lie and converted in registers (once for the dot products,
// again for the gradient): copying them out converted cost more than both.
template <typename acc_t, typename scalar_t>
inline Vectorized<acc_t> load_vec(const scalar_t* p) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return Vectorized<acc_t>::loadu(p);
  } else {
    static_assert(std::is_same_v<acc_t, float> && at::vec::is_reduced_floating_point_v<scalar_t>);
    Vectorized<float> converted;
    at::vec::load_to_float(p, converted);
    return converted;
  }
}

// Returns `src` viewed as acc_t: the pointer itself when the types agree,
// otherwise `scratch` filled with the converted values.
template <typename acc_t, typename scalar_t>
inline const acc_t* row_as(const scalar_t* src, int64_t len, std::vector<acc_t>& scratch) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    return src;
  } else {
    scratch.resize(static_cast<size_t>(len));
    convert_to_acc(src, len, scratch.data());
    return scratch.data();
  }
}

// dst[i] = src[i] rounded to scalar_t (a vector at a time for the half types).
template <typename scalar_t, typename acc_t>
inline void store_row(const acc_t* src, int64_t len, scalar_t* dst) {
  if constexpr (std::is_same_v<acc_t, scalar_t>) {
    if (len == 0) return;  // an empty row's pointers may be null, which memcpy must not get
    std::memcpy(dst, src, static_cast<size_t>(len) * sizeof(acc_t));
  } else {
    at::vec::convert(src, dst, len);
  }
}

// Lane i < size/2 is a[2i] + a[2i+1], lane size/2 + i is b[2i] + b[2i+1].
template <typename acc_t>
inline Vectorized<acc_t> pair_sums(const Vectorized<acc_t>& a, const Vectorized<acc_t>& b) {
  const auto halves = at::vec::deinterleave2(a, b);
  return halves.first + halves.second;
}

// out[j] = the sum of acc[j]'s lanes, for NB = 1, 2 or 4 accumulators at once.
// Summing lanes one by one cost more than the dot products before it (and every
// row's residual waits for it); merging the accumulators pairwise reduces all
// of them with one tree of vector adds, in an order set by the vector width.
template <int NB, typename acc_t>
inline void lane_sums(const Vectorized<acc_t> (&acc)[NB], acc_t* out) {
  static_assert(NB == 1 || NB == 2 || NB == 4, "lane_sums merges 1, 2 or 4 accumulators");
  using Vec = Vectorized<acc_t>;
  Vec merged = acc[0];
  if constexpr (NB == 2) merged = pair_sums(acc[0], acc[1]);
  if constexpr (NB == 4) merged = pair_sums(pair_sums(acc[0], acc[1]), pair_sums(acc[2], acc[3]));
  // acc[j]'s partial sums now fill lanes [j * size / NB, (j + 1) * size / NB).
  for (int lanes_each = Vec::size() / NB; lanes_each > 1; lanes_each /= 2) merged = pair_sums(merged, merged);
  alignas(64) acc_t lanes[Vec::size()];
  merged.store(lanes);
  for (int j = 0; j < NB; ++j) out[j] = lanes[j];
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// The four-accumulator float case is every dot product of the multi-output
// kernels; their four sums come back in one SSE register. Lane-crossing
// permutes are slow (the generic tree above costs more than the dot products),
// so this adds within each 128-bit lane first, with cheap unpacks and
// shuffles, leaving one cross-lane step per 128 bits.
inline __m128 lane_sums_of_four(const Vectorized<float> (&acc)[4]) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(acc[0], acc[1]), _mm512_unpackhi_ps(acc[0], acc[1]));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(acc[2], acc[3]), _mm512_unpackhi_ps(acc[2], acc[3]));
  // Each 128-bit lane now holds partial sums of acc[0..3] in that order.
  const __m512 sums = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
  // 128-bit lane q + lane q + 2, then lane 0 + lane 1: the halves are extracted
  // rather than permuted in place, so these adds run at 256 and 128 bits.
  const __m256 halves = _mm256_add_ps(_mm512_castps512_ps256(sums), _mm512_extractf32x8_ps(sums, 1));
  return _mm_add_ps(_mm256_castps256_ps128(halves), _mm256_extractf128_ps(halves, 1));
#else
  const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(acc[0], acc[1]), _mm256_unpackhi_ps(acc[0], acc[1]));
  const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(acc[2], acc[3]), _mm256_unpackhi_ps(acc[2], acc[3]));
  const __m256 sums = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, 0x44), _mm256_shuffle_ps(ab, cd, 0xEE));
  return _mm_add_ps(_mm256_castps256_ps128(sums), _mm256_extractf128_ps(sums, 1));
#endif
}

template <>
inline void lane_sums<4, float>(const Vectorized<float> (&acc)[4], float* out) {
  _mm_storeu_ps(out, lane_sums_of_four(acc));
}

// One accumulator (a single output's dot product): the same idea, halving
// within 128-bit lanes last, where the shuffles are cheap.
template <>
inline void lane_sums<1, float>(const Vectorized<float> (&acc)[1], float* out) {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 sums = _mm512_add_ps(acc[0], _mm512_shuffle_f32x4(acc[0], acc[0], 0x4E));
  sums = _mm512_add_ps(sums, _mm512_shuffle_f32x4(sums, sums, 0xB1));
  __m128 quarter = _mm512_castps512_ps128(sums);
#else
  __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(acc[0]), _mm256_extractf128_ps(acc[0], 1));
#endif
  quarter = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
  quarter = _mm_add_ss(quarter, _mm_shuffle_ps(quarter, quarter, 0x55));
  *out = _mm_cvtss_f32(quarter);
}
#endif

template <typename acc_t>
inline acc_t lane_sum(const Vectorized<acc_t>& v) {
  const Vectorized<acc_t> one[1] = {v};
  acc_t sum;
  lane_sums(one, &sum);
  return sum;
}

#if defined(CPU_CAPABILITY_AVX512)
// The tails of dot_rows below for 4 float rows and 4 weight rows: features
// [d, len), fewer than a vector. The 16 sums (lane 4r + j: row r, output j) run
// side by side in one register, each taking the scalar tail's fused
// multiply-adds in its order; the operands come from the rows' and weights'
// tails (loaded 8 features at a time) by one permute each. One thread, 8192
// rows, 16 outputs: d = 127 139 -> 116 ns a row, d = 120 111 -> 102 (scalar,
// each (row, output) sum was its own chain of up to 15 dependent steps). Not
// inlined: inside the dot products' loop it cost rows without a tail ~2%
// (d = 64, one thread, 16 outputs 45.7 -> 46.5 ns a row).
[[gnu::noinline]] inline void add_dot_tails_4x4(const float* const* x, const float* w, int64_t d, int64_t len, float* out,
                              int64_t out_stride) {
  __m512 sums = _mm512_castps128_ps512(_mm_loadu_ps(out));
  sums = _mm512_insertf32x4(sums, _mm_loadu_ps(out + out_stride), 1);
  sums = _mm512_insertf32x4(sums, _mm_loadu_ps(out + 2 * out_stride), 2);
  sums = _mm512_insertf32x4(sums, _mm_loadu_ps(out + 3 * out_stride), 3);
  // Lane 4r + j reads feature t of x[r] (x_index) and of weight row j (w_index)
  // from a pair of registers holding 8 features of four rows each.
  const __m512i x_first = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
  const __m512i w_first = _mm512_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24);
  const auto two_rows = [](const float* a, const float* b, __mmask8 mask) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(mask, a)), _mm256_maskz_loadu_ps(mask, b), 1);
  };
  for (int64_t first = d; first < len; first += 8) {
    const int64_t count = std::min<int64_t>(8, len - first);
    const __mmask8 mask = static_cast<__mmask8>((1u << count) - 1);
    const __m512 x01 = two_rows(x[0] + first, x[1] + first, mask), x23 = two_rows(x[2] + first, x[3] + first, mask);
    const __m512 w01 = two_rows(w + first, w + len + first, mask);
    const __m512 w23 = two_rows(w + 2 * len + first, w + 3 * len + first, mask);
    __m512i x_index = x_first, w_index = w_first;
    for (int64_t t = 0; t < count; ++t) {
      const __m512 xt = _mm512_permutex2var_ps(x01, x_index, x23), wt = _mm512_permutex2var_ps(w01, w_index, w23);
      sums = _mm512_fmadd_ps(xt, wt, sums);
      x_index = _mm512_add_epi32(x_index, _mm512_set1_epi32(1));
      w_index = _mm512_add_epi32(w_index, _mm512_set1_epi32(1));
    }
  }
  _mm_storeu_ps(out, _mm512_castps512_ps128(sums));
  _mm_storeu_ps(out + out_stride, _mm512_extractf32x4_ps(sums, 1));
  _mm_storeu_ps(out + 2 * out_stride, _mm512_extractf32x4_ps(sums, 2));
  _mm_storeu_ps(out + 3 * out_stride, _mm512_extractf32x4_ps(sums, 3));
}
#elif defined(CPU_CAPABILITY_AVX2)
// The same for 3 float rows by 4 weight rows under AVX2 (fewer than 8 tail
// features): rows 0 and 1 side by side in one register (lane 4r + j), row 2 in
// a 4-float one, the weights' feature t gathered by broadcasts and blends.
inline void add_dot_tails_3x4(const float* const* x, const float* w, int64_t d, int64_t len, float* out,
                              int64_t out_stride) {
  __m256 sums01 = _mm256_set_m128(_mm_loadu_ps(out + out_stride), _mm_loadu_ps(out));
  __m128 sums2 = _mm_loadu_ps(out + 2 * out_stride);
  for (int64_t t = d; t < len; ++t) {
    const __m128 w01 = _mm_blend_ps(_mm_broadcast_ss(w + t), _mm_broadcast_ss(w + len + t), 0b0010);
    const __m128 w23 = _mm_blend_ps(_mm_broadcast_ss(w + 2 * len + t), _mm_broadcast_ss(w + 3 * len + t), 0b1000);
    const __m128 wt = _mm_blend_ps(w01, w23, 0b1100);
    const __m256 x01 = _mm256_blend_ps(_mm256_broadcast_ss(x[0] + t), _mm256_broadcast_ss(x[1] + t), 0xF0);
    sums01 = _mm256_fmadd_ps(x01, _mm256_set_m128(wt, wt), sums01);
    sums2 = _mm_fmadd_ps(_mm_broadcast_ss(x[2] + t), wt, sums2);
  }
  _mm_storeu_ps(out, _mm256_castps256_ps128(sums01));
  _mm_storeu_ps(out + out_stride, _mm256_extractf128_ps(sums01, 1));
  _mm_storeu_ps(out + 2 * out_stride, sums2);
}
#endif

// out[r * out_stride + j] = dot(x[r], w + j * len) for R rows and NB = 1, 2 or 4
// consecutive weight rows: each row's vector is loaded once for the NB outputs
// and each weight vector once for the R rows.
template <int R, int NB, typename scalar_t, typename acc_t>
inline void dot_rows(const scalar_t* const* x, const acc_t* w, int64_t len, acc_t* out, int64_t out_stride) {
  using Vec = Vectorized<acc_t>;
  Vec acc[R][NB];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NB; ++j) acc[r][j] = Vec(acc_t(0));
  }
  int64_t d = 0;
  for (; d + Vec::size() <= len; d += Vec::size()) {
    Vec wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = Vec::loadu(w + j * len + d);
    for (int r = 0; r < R; ++r) {
      const Vec xv = load_vec<acc_t>(x[r] + d);
      for (int j = 0; j < NB; ++j) acc[r][j] = at::vec::fmadd(xv, wv[j], acc[r][j]);
    }
  }
  // Unrolled, so that acc[r] is named at compile time and the accumulators are
  // reduced from registers (a loop over r kept them on the stack).
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    acc_t* row_out = out + r * out_stride;
    if (d > 0) {
      lane_sums(acc[r], row_out);
    } else {
      std::fill(row_out, row_out + NB, acc_t(0));  // rows shorter than a vector (the book's two features)
    }
  }
  // The sums in locals, the NB outputs' chains side by side: through row_out[j]
  // (which may alias x and w as far as the compiler knows) every step waited on
  // the previous one's store, and the 8-float tail of d = 72 cost three times
  // the four whole vectors before it (AVX-512, 4 outputs).
  if (d == len) return;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (R == 4 && NB == 4 && std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    add_dot_tails_4x4(x, w, d, len, out, out_stride);
    return;
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (R == 3 && NB == 4 && std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    add_dot_tails_3x4(x, w, d, len, out, out_stride);
    return;
  }
#endif
  for (int r = 0; r < R; ++r) {
    acc_t* row_out = out + r * out_stride;
    acc_t sums[NB];
    for (int j = 0; j < NB; ++j) sums[j] = row_out[j];
    for (int64_t t = d; t < len; ++t) {
      const acc_t xt = static_cast<acc_t>(x[r][t]);
      for (int j = 0; j < NB; ++j) sums[j] = multiply_add(xt, w[j * len + t], sums[j]);
    }
    for (int j = 0; j < NB; ++j) row_out[j] = sums[j];
  }
}

// out[r * out_stride + j] = dot(x[r], w_j) for R rows and every row j < rows of w,
// in blocks of four weight rows.
template <int R, typename scalar_t, typename acc_t>
inline void dot_all_rows(const scalar_t* const* x, const acc_t* w, int64_t len, int64_t rows, acc_t* out,
                         int64_t out_stride) {
  int64_t j = 0;
  for (; j + 4 <= rows; j += 4) dot_rows<R, 4>(x, w + j * len, len, out + j, out_stride);
  if (rows - j >= 2) {
    dot_rows<R, 2>(x, w + j * len, len, out + j, out_stride);
    j += 2;
  }
  if (rows - j == 1) dot_rows<R, 1>(x, w + j * len, len, out + j, out_stride);
}

// out[j] = dot(x, w_j) for every row j < rows of w.
template <typename scalar_t, typename acc_t>
inline void dot_all_rows(const scalar_t* x, const acc_t* w, int64_t len, int64_t rows, acc_t* out) {
  dot_all_rows<1>(&x, w, len, rows, out, 0);
}

// sum += scale[0] * rows[0] + scale[1] * rows[1] + ... (each element in row
// order), loading and storing `sum` once.
template <typename acc_t>
inline void add_scaled_rows(const acc_t* const* rows, const acc_t* scale, int64_t count, int64_t len, acc_t* sum) {
  using Vec = Vectorized<acc_t>;
  constexpr int kUnroll = 4;  // independent sums in flight, to hide the latency of each FMA chain
  int64_t d = 0;
  for (; d + kUnroll * Vec::size() <= len; d += kUnroll * Vec::size()) {
    Vec acc[kUnroll];
    for (int u = 0; u < kUnroll; ++u) acc[u] = Vec::loadu(sum + d + u * Vec::size());
    for (int64_t i = 0; i < count; ++i) {
      const Vec s(scale[i]);
      for (int u = 0; u < kUnroll; ++u) acc[u] = at::vec::fmadd(s, Vec::loadu(rows[i] + d + u * Vec::size()), acc[u]);
    }
    for (int u = 0; u < kUnroll; ++u) acc[u].store(sum + d + u * Vec::size());
  }
  for (; d + Vec::size() <= len; d += Vec::size()) {
    Vec acc = Vec::loadu(sum + d);
    for (int64_t i = 0; i < count; ++i) acc = at::vec::fmadd(Vec(scale[i]), Vec::loadu(rows[i] + d), acc);
    acc.store(sum + d);
  }
  for (; d < len; ++d) {
    acc_t acc = sum[d];
    for (int64_t i = 0; i < count; ++i) acc += scale[i] * rows[i][d];
    sum[d] = acc;
  }
}

// Gradient-like sums over rows take the rows in blocks of this many, so that
// add_outer_products loads and stores each sum once per block.
constexpr int64_t kRowBlock = 8;

// The outer-product update below, on NJ outputs by NV vectors of columns from
// `col`: NJ x NV sums stay in registers across the rows, and each row's vectors
// are loaded once for all NJ outputs. The scale of output j in row i is
// scales[j * output_step + i * row_step]. kRows > 0 fixes the row count at
// compile time (a full block), so that the row loop unrolls.
template <int NJ, int NV, int kRows, typename scalar_t, typename acc_t>
inline void add_outer_tile(const scalar_t* const* rows, const acc_t* scales, int64_t output_step, int64_t row_step,
                           int64_t count, int64_t col, acc_t* sums, int64_t stride) {
  using Vec = Vectorized<acc_t>;
  const int64_t row_count = kRows > 0 ? kRows : count;
  Vec acc[NJ][NV];
  for (int j = 0; j < NJ; ++j) {
    for (int v = 0; v < NV; ++v) acc[j][v] = Vec::loadu(sums + j * stride + col + v * Vec::size());
  }
  for (int64_t i = 0; i < row_count; ++i) {
    Vec x[NV];
    for (int v = 0; v < NV; ++v) x[v] = load_vec<acc_t>(rows[i] + col + v * Vec::size());
    for (int j = 0; j < NJ; ++j) {
      const Vec scale(scales[j * output_step + i * row_step]);
      for (int v = 0; v < NV; ++v) acc[j][v] = at::vec::fmadd(scale, x[v], acc[j][v]);
    }
  }
  for (int j = 0; j < NJ; ++j) {
    for (int v = 0; v < NV; ++v) acc[j][v].store(sums + j * stride + col + v * Vec::size());
  }
}

// The columns of add_outer_columns below that fill whole vectors, kRows (> 0)
// or `count` rows at a time; returns where the rest (shorter than a vector) begins.
template <int NJ, int kRows, typename scalar_t, typename acc_t>
inline int64_t add_outer_vectors(const scalar_t* const* rows, const acc_t* scales, int64_t output_step,
                                 int64_t row_step, int64_t count, int64_t len, acc_t* sums, int64_t stride) {
  using Vec = Vectorized<acc_t>;
  int64_t col = 0;
  if constexpr (kRows > 0) {
    // Three vectors by NJ outputs: with four, 12 independent FMA chains, enough
    // to keep both FMA units busy through each FMA's latency (8 were not).
    for (; col + 3 * Vec::size() <= len; col += 3 * Vec::size()) {
      add_outer_tile<NJ, 3, kRows>(rows, scales, output_step, row_step, count, col, sums, stride);
    }
  }
  for (; col + 2 * Vec::size() <= len; col += 2 * Vec::size()) {
    add_outer_tile<NJ, 2, kRows>(rows, scales, output_step, row_step, count, col, sums, stride);
  }
  for (; col + Vec::size() <= len; col += Vec::size()) {
    add_outer_tile<NJ, 1, 0>(rows, scales, output_step, row_step, count, col, sums, stride);
  }
  return col;
}

// The first `count` (< a vector) floats at p, the other lanes zero, and their
// store: masked where the build has AVX2 or AVX-512, so that nothing past them
// is read or written. at::vec's partial loads go through a copy on the stack
// under AVX2 (and in the default build, which takes them only where it must).
#if defined(CPU_CAPABILITY_AVX2)
inline __m256i first_lanes(int64_t count) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif
inline Vectorized<float> load_first(const float* p, int64_t count) {
#if defined(CPU_CAPABILITY_AVX2)
  return _mm256_maskload_ps(p, first_lanes(count));
#else
  return Vectorized<float>::loadu(p, count);
#endif
}
inline void store_first(const Vectorized<float>& v, float* p, int64_t count) {
#if defined(CPU_CAPABILITY_AVX2)
  _mm256_maskstore_ps(p, first_lanes(count), v);
#else
  v.store(p, count);
#endif
}

// The columns [col, len) of add_outer_columns below, shorter than a vector.
// Float rows take them as one masked vector, the NJ outputs' sums side by side
// row by row (the same fused multiply-adds the compiled scalar loop makes, lane
// by lane). One thread, 8192 rows: AVX-512 (tails of up to 15 columns), d = 72:
// 4 outputs 41 -> 34.5 ns a row against the scalar loop, 16 outputs 159 -> 131,
// and 22 -> 18, 81 -> 64 with the outputs side by side (one output after
// another, each sum's chain of `count` fused multiply-adds ran at their latency).
template <int NJ, typename scalar_t, typename acc_t>
inline void add_outer_tail(const scalar_t* const* rows, const acc_t* scales, int64_t output_step, int64_t row_step,
                           int64_t count, int64_t col, int64_t len, acc_t* sums, int64_t stride) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    using Vec = Vectorized<float>;
    const int64_t columns = len - col;
    if (columns <= 0) return;
    Vec sum[NJ];
    for (int j = 0; j < NJ; ++j) sum[j] = load_first(sums + j * stride + col, columns);
    for (int64_t i = 0; i < count; ++i) {
      const Vec x = load_first(rows[i] + col, columns);
      for (int j = 0; j < NJ; ++j) sum[j] = at::vec::fmadd(Vec(scales[j * output_step + i * row_step]), x, sum[j]);
    }
    for (int j = 0; j < NJ; ++j) store_first(sum[j], sums + j * stride + col, columns);
    return;
  }
#endif
  for (int j = 0; j < NJ; ++j) {
    for (int64_t c = col; c < len; ++c) {
      acc_t sum = sums[j * stride + c];
      for (int64_t i = 0; i < count; ++i) {
        sum += scales[j * output_step + i * row_step] * static_cast<acc_t>(rows[i][c]);
      }
      sums[j * stride + c] = sum;
    }
  }
}

template <int NJ, typename scalar_t, typename acc_t>
inline void add_outer_columns(const scalar_t* const* rows, const acc_t* scales, int64_t count, int64_t len,
                              acc_t* sums, int64_t stride) {
  const int64_t col = count == kRowBlock
                          ? add_outer_vectors<NJ, kRowBlock>(rows, scales, kRowBlock, 1, count, len, sums, stride)
                          : add_outer_vectors<NJ, 0>(rows, scales, kRowBlock, 1, count, len, sums, stride);
  add_outer_tail<NJ>(rows, scales, kRowBlock, 1, count, col, len, sums, stride);
}

// For each output j < k: sums[j * stride + c] += scales[j * kRowBlock + i] * rows[i][c]
// over the block's rows i < count (in row order: the same sums as one axpy per
// row) and columns c < len.
template <typename scalar_t, typename acc_t>
inline void add_outer_products(const scalar_t* const* rows, const acc_t* scales, int64_t count, int64_t len,
                               int64_t k, acc_t* sums, int64_t stride) {
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) add_outer_columns<4>(rows, scales + j * kRowBlock, count, len, sums + j * stride, stride);
  if (k - j >= 2) {
    add_outer_columns<2>(rows, scales + j * kRowBlock, count, len, sums + j * stride, stride);
    j += 2;
  }
  if (k - j == 1) add_outer_columns<1>(rows, scales + j * kRowBlock, count, len, sums + j * stride, stride);
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

}  // namespace CPU_CAPABILITY
}  // namespace fused_linreg::cpu
