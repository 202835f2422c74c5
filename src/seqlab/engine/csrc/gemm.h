// Dense products of the time loops: BLAS (MKL inside torch's wheels), a plain loop for tiny
// products, MKL's packed GEMM or the AVX2 panel kernel (panels.h) for the per-step products
// with a loop-invariant W, and the switch that keeps small products on one BLAS thread.
//
// Included once by recurrence.cpp at global scope (the BLAS symbols are C functions); the rest
// lives in the translation unit's anonymous namespace. No cell-specific code here.

#include <limits>

extern "C" {
// Fortran BLAS exported by libtorch_cpu (MKL on x86 wheels). Weak: absent -> ATen fallback.
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
// MKL's packed GEMM: pack W_hh once, reuse it for every step (oneDNN does the same).
size_t SGEMM_PACK_GET_SIZE(const char*, const int*, const int*, const int*)
    __attribute__((weak));
void SGEMM_PACK(const char*, const char*, const int*, const int*, const int*, const float*,
                const float*, const int*, float*) __attribute__((weak));
void SGEMM_COMPUTE(const char*, const char*, const int*, const int*, const int*, const float*,
                   const int*, const float*, const int*, const float*, float*, const int*)
    __attribute__((weak));
}


namespace {

// The CPU runs the AVX2 + FMA code paths (panels here, the row kernels' AVX2 copy).
bool cpu_has_avx2() {
#ifdef SEQLAB_HAVE_AVX2
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

// Row-major C(M,N) = op(A)(M,K) @ op(B)(K,N) + beta·C, beta ∈ {0, 1}; tA/tB: stored transposed.
template <typename S>
void blas(char ta, char tb, const int* m, const int* n, const int* k, const S* alpha, const S* a,
          const int* lda, const S* b, const int* ldb, const S* beta, S* c, const int* ldc);
template <>
void blas<float>(char ta, char tb, const int* m, const int* n, const int* k, const float* alpha,
                 const float* a, const int* lda, const float* b, const int* ldb,
                 const float* beta, float* c, const int* ldc) {
  sgemm_(&ta, &tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
template <>
void blas<double>(char ta, char tb, const int* m, const int* n, const int* k,
                  const double* alpha, const double* a, const int* lda, const double* b,
                  const int* ldb, const double* beta, double* c, const int* ldc) {
  dgemm_(&ta, &tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename S>
bool have_blas() {
  return std::is_same<S, float>::value ? sgemm_ != nullptr : dgemm_ != nullptr;
}

// Below this many multiply-adds a plain loop beats any library call's fixed overhead.
constexpr int64_t kSmallGemm = 8192;

template <typename S>
void gemm(bool tb, int64_t M, int64_t N, int64_t K, const S* A, int64_t lda, const S* B,
          int64_t ldb, bool accumulate, S* C, int64_t ldc) {
  if (M * N * K <= kSmallGemm) {
    for (int64_t i = 0; i < M; ++i) {
      S* __restrict c = C + i * ldc;
      const S* __restrict a = A + i * lda;
      if (!accumulate)
        for (int64_t j = 0; j < N; ++j) c[j] = S(0);
      if (tb) {  // B stored (N, K): dot products of contiguous rows
        for (int64_t j = 0; j < N; ++j) {
          const S* __restrict bj = B + j * ldb;
          S acc = S(0);
          for (int64_t p = 0; p < K; ++p) acc += a[p] * bj[p];
          c[j] += acc;
        }
      } else {  // B stored (K, N): axpy of its rows
        for (int64_t p = 0; p < K; ++p) {
          const S* __restrict bp = B + p * ldb;
          const S ap = a[p];
          for (int64_t j = 0; j < N; ++j) c[j] += ap * bp[j];
        }
      }
    }
    return;
  }
  if (have_blas<S>()) {
    // column-major view: Cᵀ(N,M) = op(B)ᵀ(N,K) · op(A)ᵀ(K,M)
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const S one = S(1), beta = accumulate ? S(1) : S(0);
    blas<S>(tb ? 'T' : 'N', 'N', &m, &n, &k, &one, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  at::Tensor a = at::from_blob(const_cast<S*>(A), {M, K}, {lda, 1}, opts);
  at::Tensor b = tb ? at::from_blob(const_cast<S*>(B), {N, K}, {ldb, 1}, opts).t()
                    : at::from_blob(const_cast<S*>(B), {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (accumulate)
    c.addmm_(a, b);
  else
    c.copy_(at::mm(a, b));
}

// Row-major C(M,N) (+)= Aᵀ @ B with A stored (K, M) and B stored (K, N): weight gradients.
template <typename S>
void gemm_ta(int64_t M, int64_t N, int64_t K, const S* A, int64_t lda, const S* B, int64_t ldb,
             bool accumulate, S* C, int64_t ldc) {
  if (!accumulate)
    for (int64_t i = 0; i < M; ++i) std::fill_n(C + i * ldc, N, S(0));
  if (M * N * K <= kSmallGemm) {
    for (int64_t p = 0; p < K; ++p) {
      const S* __restrict bp = B + p * ldb;
      for (int64_t i = 0; i < M; ++i) {
        const S a = A[p * lda + i];
        S* __restrict c = C + i * ldc;
        for (int64_t j = 0; j < N; ++j) c[j] += a * bp[j];
      }
    }
    return;
  }
  if (have_blas<S>()) {  // column-major view: Cᵀ(N,M) = Bᵀ(N,K) · A(K,M)
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const S one = S(1);
    blas<S>('N', 'T', &m, &n, &k, &one, B, &la, A, &lb, &one, C, &lc);
    return;
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  at::Tensor a = at::from_blob(const_cast<S*>(A), {K, M}, {lda, 1}, opts).t();
  at::Tensor b = at::from_blob(const_cast<S*>(B), {K, N}, {ldb, 1}, opts);
  at::from_blob(C, {M, N}, {ldc, 1}, opts).addmm_(a, b);
}

#ifdef SEQLAB_HAVE_AVX2
#include "panels.h"
#endif

// Per-step products small enough for the panel kernel, where it beats MKL's packed GEMM.
bool use_panels(int64_t M, int64_t N, int64_t K) {
#ifdef SEQLAB_HAVE_AVX2
  static const bool off = std::getenv("SEQLAB_NO_PANELS") != nullptr;
  return !off && cpu_has_avx2() && M <= 128 && N * K <= (int64_t(1) << 16);
#else
  return false;
#endif
}

// Preparing W costs about as much as many products with it (MKL's pack of a 2048×512 W
// took ~4.5 ms, ~12 one-row products): below this many rows of A over W's lifetime
// (steps × batch; generation feeds one token at a time) the plain GEMM is faster.
constexpr int64_t kPackRows = 256;

// The loop-invariant right operand W of `gemm` prepared once for a fixed (tb, N, K): as
// panels (float, small per-step products that run on one thread, AVX2), else packed by MKL
// (float, when the packed API exists and the product is not tiny), else inactive. `rows`:
// how many rows of A will meet W in all (inactive below kPackRows).
template <typename S>
struct PackedW {
  at::Tensor buf;
  bool active = false;
#ifdef SEQLAB_HAVE_AVX2
  std::optional<Panels> panels;
#endif
  PackedW(bool tb, int64_t M, int64_t N, int64_t K, const S* W, int64_t ldw,
          bool one_thread = true, int64_t rows = std::numeric_limits<int64_t>::max()) {
    if (!std::is_same<S, float>::value || M * N * K <= kSmallGemm) return;
    if (rows < kPackRows) return;
#ifdef SEQLAB_HAVE_AVX2
    if (one_thread && use_panels(M, N, K)) {
      panels = make_panels(tb, N, K, reinterpret_cast<const float*>(W), ldw);
      return;
    }
#endif
    if (!SGEMM_PACK_GET_SIZE || !SGEMM_PACK || !SGEMM_COMPUTE) return;
    static const bool off = std::getenv("SEQLAB_NO_PACK") != nullptr;
    if (off) return;
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int ld = static_cast<int>(ldw);
    const char id = 'A', trans = tb ? 'T' : 'N';
    const float one = 1.0f;
    size_t bytes = SGEMM_PACK_GET_SIZE(&id, &m, &n, &k);
    buf = at::empty({static_cast<int64_t>(bytes)}, at::TensorOptions().dtype(at::kByte));
    SGEMM_PACK(&id, &trans, &m, &n, &k, &one, reinterpret_cast<const float*>(W), &ld,
               reinterpret_cast<float*>(buf.data_ptr()));
    active = true;
  }
};

// gemm with a prepared W: C(M,N) (+)= A(M,K) @ op(W)
template <typename S>
void gemm_p(const PackedW<S>& pw, bool tb, int64_t M, int64_t N, int64_t K, const S* A,
            int64_t lda, const S* W, int64_t ldw, bool accumulate, S* C, int64_t ldc) {
#ifdef SEQLAB_HAVE_AVX2
  if constexpr (std::is_same<S, float>::value) {
    if (pw.panels) {
      panel_gemm(M, *pw.panels, A, lda, C, ldc, accumulate);
      return;
    }
  }
#endif
  if (!pw.active) {
    gemm<S>(tb, M, N, K, A, lda, W, ldw, accumulate, C, ldc);
    return;
  }
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldw), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const char pa = 'P', nb = 'N';
  const float beta = accumulate ? 1.0f : 0.0f;
  SGEMM_COMPUTE(&pa, &nb, &m, &n, &k, reinterpret_cast<const float*>(pw.buf.data_ptr()), &la,
                reinterpret_cast<const float*>(A), &lb, &beta, reinterpret_cast<float*>(C), &lc);
}

// Small products run single-threaded: waking a second BLAS thread costs more than it saves,
// and on a busy machine the wake-up can stall for milliseconds. Restores on scope exit.
struct BlasThreads {
  int previous = -1;
  explicit BlasThreads(int64_t macs) {
    if (MKL_Set_Num_Threads_Local && macs < (int64_t(1) << 20))
      previous = MKL_Set_Num_Threads_Local(1);
  }
  ~BlasThreads() {
    if (previous >= 0) MKL_Set_Num_Threads_Local(previous);
  }
};

}  // namespace
