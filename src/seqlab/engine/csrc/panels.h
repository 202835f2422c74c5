// A small-GEMM kernel for the per-step products of the time loop (float; AVX2 + FMA, and
// AVX-512F tiles for the full panels where the CPU has it).
//
// C(M, N) (+)= A(M, K) @ op(W), with op(W) repacked once per call into panels of 16 columns:
// panel p holds op(W)[k][16p .. 16p+15] for k = 0..K-1, contiguous and zero padded. Each
// panel (K·64 bytes) stays in L1 while 4-row tiles of A stream past it, and A needs no packing
// because its entries are only broadcast. MKL's packed GEMM still copies A on every call; at
// the step sizes here (M = batch ≤ 128, N·K ≤ 64 Ki) that costs it 10-40 % (measured). At
// N·K = 128 Ki (C2) MKL was 8 % faster inside the loop, and at C3 the two tie.
// Included by recurrence.cpp after <immintrin.h>, only where SEQLAB_HAVE_AVX2 is defined.

struct Panels {
  at::Tensor buf;
  int64_t N = 0, K = 0;
  const float* p = nullptr;
};

// tb: W stored (N, K) and op(W) = Wᵀ; else W stored (K, N)
inline Panels make_panels(bool tb, int64_t N, int64_t K, const float* W, int64_t ldw) {
  Panels out;
  out.N = N;
  out.K = K;
  const int64_t np = (N + 15) / 16;
  out.buf = at::zeros({np * K * 16}, at::TensorOptions().dtype(at::kFloat));
  float* d = out.buf.data_ptr<float>();
  for (int64_t col = 0; col < N; ++col) {
    float* panel = d + (col / 16) * K * 16 + col % 16;
    if (tb) {
      const float* w = W + col * ldw;
      for (int64_t k = 0; k < K; ++k) panel[k * 16] = w[k];
    } else {
      for (int64_t k = 0; k < K; ++k) panel[k * 16] = W[k * ldw + col];
    }
  }
  out.p = d;
  return out;
}

// R rows of A times one panel; FULL: all 16 columns exist, else only the lanes in m0/m1
template <int R, bool FULL>
__attribute__((target("avx2,fma"), always_inline)) inline void panel_tile(
    int64_t K, const float* A, int64_t lda, const float* w, float* C, int64_t ldc, bool acc,
    __m256i m0, __m256i m1) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* c = C + r * ldc;
    c0[r] = !acc ? _mm256_setzero_ps() : FULL ? _mm256_loadu_ps(c) : _mm256_maskload_ps(c, m0);
    c1[r] = !acc  ? _mm256_setzero_ps()
            : FULL ? _mm256_loadu_ps(c + 8)
                   : _mm256_maskload_ps(c + 8, m1);
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_load_ps(w + 16 * k), w1 = _mm256_load_ps(w + 16 * k + 8);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
      c0[r] = _mm256_fmadd_ps(a, w0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, w1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* c = C + r * ldc;
    if (FULL) {
      _mm256_storeu_ps(c, c0[r]);
      _mm256_storeu_ps(c + 8, c1[r]);
    } else {
      _mm256_maskstore_ps(c, m0, c0[r]);
      _mm256_maskstore_ps(c + 8, m1, c1[r]);
    }
  }
}

template <bool FULL>
__attribute__((target("avx2,fma"))) void panel_rows(int64_t M, int64_t K, const float* A,
                                                    int64_t lda, const float* w, float* C,
                                                    int64_t ldc, bool acc, __m256i m0,
                                                    __m256i m1) {
  int64_t b = 0;
  for (; b + 4 <= M; b += 4)
    panel_tile<4, FULL>(K, A + b * lda, lda, w, C + b * ldc, ldc, acc, m0, m1);
  for (; b < M; ++b) panel_tile<1, FULL>(K, A + b * lda, lda, w, C + b * ldc, ldc, acc, m0, m1);
}

// ---- AVX-512: one zmm is a whole panel row. The AVX2 tile runs at that ISA's FMA peak at
// the per-step sizes (C1: ~87 GFLOP/s on one core), so the wider registers are the gain left.

// The CPU and OS run AVX-512 F/DQ/VL/BW (what the row kernels' AVX-512 copy is compiled for;
// libgcc checks the OS saves the zmm state); SEQLAB_NO_AVX512 turns it off (A/B runs, the
// AVX2 paths on the same machine).
inline bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") &&
                          __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw") &&
                          std::getenv("SEQLAB_NO_AVX512") == nullptr;
  return yes;
}

// R rows of A times NP adjacent full panels (NP·16 columns): R·NP accumulators
template <int R, int NP>
__attribute__((target("avx512f,avx2,fma"), always_inline)) inline void panel_tile512(
    int64_t K, const float* A, int64_t lda, const float* w, int64_t ps, float* C, int64_t ldc,
    bool acc) {
  __m512 c[R][NP];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q)
      c[r][q] = acc ? _mm512_loadu_ps(C + r * ldc + 16 * q) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 wq[NP];
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) wq[q] = _mm512_loadu_ps(w + q * ps + 16 * k);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);
#pragma GCC unroll 2
      for (int q = 0; q < NP; ++q) c[r][q] = _mm512_fmadd_ps(a, wq[q], c[r][q]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int q = 0; q < NP; ++q) _mm512_storeu_ps(C + r * ldc + 16 * q, c[r][q]);
}

// all M rows times NP full panels starting at w (panel stride ps floats)
template <int NP>
__attribute__((target("avx512f,avx2,fma"))) void panel_rows512(int64_t M, int64_t K,
                                                               const float* A, int64_t lda,
                                                               const float* w, int64_t ps,
                                                               float* C, int64_t ldc, bool acc) {
  int64_t b = 0;
  for (; b + 8 <= M; b += 8)
    panel_tile512<8, NP>(K, A + b * lda, lda, w, ps, C + b * ldc, ldc, acc);
  for (; b + 4 <= M; b += 4)
    panel_tile512<4, NP>(K, A + b * lda, lda, w, ps, C + b * ldc, ldc, acc);
  for (; b < M; ++b) panel_tile512<1, NP>(K, A + b * lda, lda, w, ps, C + b * ldc, ldc, acc);
}

// C(M, W.N) (+)= A(M, W.K) @ op(W)
__attribute__((target("avx2,fma"))) inline void panel_gemm(int64_t M, const Panels& W,
                                                           const float* A, int64_t lda, float* C,
                                                           int64_t ldc, bool acc) {
  const int64_t K = W.K, full = W.N / 16, rest = W.N % 16;
  const __m256i all = _mm256_set1_epi32(-1);
  int64_t p = 0;
  if (cpu_has_avx512()) {  // the full panels by pairs (32 columns), an odd one alone
    for (; p + 2 <= full; p += 2)
      panel_rows512<2>(M, K, A, lda, W.p + p * K * 16, K * 16, C + 16 * p, ldc, acc);
    if (p < full) panel_rows512<1>(M, K, A, lda, W.p + p * K * 16, K * 16, C + 16 * p, ldc, acc);
    p = full;
  }
  for (; p < full; ++p)
    panel_rows<true>(M, K, A, lda, W.p + p * K * 16, C + 16 * p, ldc, acc, all, all);
  if (rest) {
    const __m256i r = _mm256_set1_epi32(static_cast<int>(rest));
    const __m256i m0 = _mm256_cmpgt_epi32(r, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i m1 = _mm256_cmpgt_epi32(r, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
    panel_rows<false>(M, K, A, lda, W.p + full * K * 16, C + 16 * full, ldc, acc, m0, m1);
  }
}
