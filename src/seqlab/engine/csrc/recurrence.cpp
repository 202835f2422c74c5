// Native time loops of seqlab's recurrence engine (forward and hand-derived BPTT).
//
// Registered as torch.ops.seqlab_engine.{forward, backward}; the autograd glue and the exact
// buffer contract live in seqlab/engine/function.py and fused.py (the same algorithm in
// eager torch ops). LSTM, RNN and the torch.nn GRU run the whole time loop in one team of
// threads, each owning a range of hidden units: per chunk of steps it projects its units'
// inputs, per step it does its share of the recurrent GEMM and its units' pointwise pass, then
// meets the others once; the backward mirrors this and forms the weight gradients and dx chunk
// by chunk. The reset-before GRU keeps the simpler loop: the input projection of all steps in
// one GEMM, per step BLAS GEMMs and a pointwise pass parallel over rows, and the weight and
// input gradients as single GEMMs over all T·B rows after the backward loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <exception>
#ifdef _OPENMP  // built with -fopenmp where torch's own thread pool is OpenMP (native.py)
#include <omp.h>
#endif
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

template <typename S>
struct Step {
  int64_t H = 0, t = 0, gs = 0;
  int64_t u0 = 0, u1 = 0;     // the hidden units handled by this call: [u0, u1)
  S* g = nullptr;             // gates of step t, row b at g + b*gs
  const S* ak = nullptr;      // units [u0,u1): x@W_iₖᵀ (+ h_prev@W_hₖᵀ but GRU), rows of G·n
  const S* bias = nullptr;    // b_ih + b_hh (G·H, gate-major; GRU: b_hn left out) added to ak
  const S* hw = nullptr;      // torch.nn GRU: h_prev @ W_kᵀ for units [u0,u1), rows of 3n
  const S* bhn = nullptr;     // torch.nn GRU: b_hn (H), zeros without b_hh
  const S* hp = nullptr;      // h_prev (B, H)
  S* hc = nullptr;            // h of this step (B, H)
  const S* cp = nullptr;      // LSTM c_prev
  S* cc = nullptr;            // LSTM c of this step
  S* y = nullptr;             // masked output row block (lengths only) or null
  const int64_t* len = nullptr;
  S* tmp = nullptr;           // (B, H) scratch: GRU-reset-before r⊙h / d(r⊙h)
  // backward
  const S* gy = nullptr;      // dL/dy of step t, row b at gy + b*gys (gys = H, or 0 if broadcast)
  int64_t gys = 0;
  S* dh = nullptr;            // dL/dh of this step (from later steps) (B, H)
  S* dhn = nullptr;           // dL/dh_prev being built (B, H)
  S* dc = nullptr;            // LSTM dL/dc, updated in place (B, H)
  S* da = nullptr;            // dA of step t, row stride das
  int64_t das = 0;
  S* dak = nullptr;           // LSTM/RNN/GRU: dA of units [u0,u1) (input side), rows of G·n
  S* dakr = nullptr;          // torch.nn GRU: the recurrent side [dA_r, dA_z, dA_n ⊙ r]
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

namespace seqlab_base {
#include "kernels.h"
}  // namespace seqlab_base

#if defined(__x86_64__) && defined(__GNUC__)
#define SEQLAB_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace seqlab_avx2 {
#include "kernels.h"
}  // namespace seqlab_avx2
#pragma GCC pop_options
#endif

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

enum Mode : int64_t { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3, GRU_BEFORE = 4 };

#include "checks.h"

template <typename S>
using RowFn = void (*)(const Step<S>&, int64_t, int64_t);

template <typename S>
struct Kernels {
  RowFn<S> lstm_fwd, tanh_fwd, relu_fwd, gru_fwd, grub_fwd1, grub_fwd2;
  RowFn<S> lstm_bwd, tanh_bwd, relu_bwd, gru_bwd, grub_bwd1, grub_bwd2;
};

#define SEQLAB_KERNELS(NS, S)                                                              \
  Kernels<S> {                                                                             \
    NS::lstm_fwd<S>, NS::rnn_fwd<S, false>, NS::rnn_fwd<S, true>, NS::gru_fwd<S>,          \
        NS::grub_fwd1<S>, NS::grub_fwd2<S>, NS::lstm_bwd<S>, NS::rnn_bwd<S, false>,        \
        NS::rnn_bwd<S, true>, NS::gru_bwd<S>, NS::grub_bwd1<S>, NS::grub_bwd2<S>           \
  }

bool cpu_has_avx2() {
#ifdef SEQLAB_HAVE_AVX2
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

template <typename S>
const Kernels<S>& kernels() {
  static const Kernels<S> base = SEQLAB_KERNELS(seqlab_base, S);
#ifdef SEQLAB_HAVE_AVX2
  static const Kernels<S> avx2 = SEQLAB_KERNELS(seqlab_avx2, S);
  if (cpu_has_avx2()) return avx2;
#endif
  return base;
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

// The loop-invariant right operand W of `gemm` prepared once for a fixed (tb, N, K): as
// panels (float, small per-step products that run on one thread, AVX2), else packed by MKL
// (float, when the packed API exists and the product is not tiny), else inactive.
template <typename S>
struct PackedW {
  at::Tensor buf;
  bool active = false;
#ifdef SEQLAB_HAVE_AVX2
  std::optional<Panels> panels;
#endif
  PackedW(bool tb, int64_t M, int64_t N, int64_t K, const S* W, int64_t ldw,
          bool one_thread = true) {
    if (!std::is_same<S, float>::value || M * N * K <= kSmallGemm) return;
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

template <typename S>
void rows(RowFn<S> fn, const Step<S>& s, int64_t B, int64_t width) {
  // parallel over batch rows once a step has enough work to pay for waking a thread
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
  if (B <= grain) {
    fn(s, 0, B);
  } else {
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { fn(s, b0, b1); });
  }
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

// Per-thread scratch reused across calls. A fresh multi-megabyte buffer per call is returned
// to the OS on free, so every call paid its page faults again (measured: +50 % on a short
// LSTM forward interleaved with other work). Reused only while nothing else holds the storage.
enum Slot { GATES = 0, CELLS = 1, DA = 2, kSlots = 3 };
constexpr int64_t kScratchMaxBytes = int64_t(256) << 20;

at::Tensor scratch(Slot slot, at::IntArrayRef shape, const at::TensorOptions& opts) {
  thread_local at::Tensor cache[kSlots];
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  at::Tensor& t = cache[slot];
  if (numel * static_cast<int64_t>(opts.dtype().itemsize()) > kScratchMaxBytes)
    return at::empty(shape, opts);
  if (!t.defined() || t.storage().use_count() > 1 || t.numel() < numel ||
      t.dtype() != opts.dtype())
    t = at::empty({numel}, opts);
  return t.narrow(0, 0, numel).view(shape);
}

// ---- splitting a step by hidden units across a team of threads (LSTM and RNN)
// Thread k owns units [u0, u1): per step it multiplies h_prev by its own packed slice of W_hh
// (the G gate rows of its units), runs its units' pointwise pass, and meets the others at one
// barrier. Each thread streams only its slice of W_hh, and the pointwise work needs no second
// fork. The backward splits the same way; its dh GEMM is split along K (each thread's dA times
// its slice), so each thread writes a (B, H) partial sum, added up by the owners next step.

// Below this many multiply-adds per step a team's barrier costs more than it saves.
constexpr int64_t kTeamMacs = 65536;

int64_t team_size(int64_t B, int64_t G, int64_t H) {
  static const bool off = [] {
    const char* v = std::getenv("SEQLAB_TEAM");
    return v != nullptr && std::string(v) == "0";
  }();
#ifndef _OPENMP
  return 1;
#endif
  if (off || at::in_parallel_region() || B * G * H * H < kTeamMacs || H < 16) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H / 8));
}

template <typename S>
struct Shard {
  int64_t u0 = 0, u1 = 0;
  at::Tensor w;    // W_hh rows of units [u0,u1), gate-major (G·n, H); W_hh itself when whole
  at::Tensor wi;   // fwd: the same rows of W_ih (G·n, I)
  at::Tensor tmp;   // fwd: (Tc·B, G·n) pre-activations of a chunk of steps; bwd: their dA
  at::Tensor tmp2;  // torch.nn GRU fwd: (B, G·n) h_prev @ wᵀ; bwd: the chunk's recurrent dA
  std::optional<PackedW<S>> pw, pwi;
  S* wp = nullptr;
  S* wip = nullptr;
  S* tp = nullptr;
  S* tp2 = nullptr;
};

// the G gate blocks' rows [u0, u0+n) of a gate-major (G·H, K) weight, as one (G·n, K) matrix
inline at::Tensor unit_rows(const at::Tensor& w, int64_t G, int64_t H, int64_t u0, int64_t n) {
  if (n == H) return w;
  std::vector<at::Tensor> parts;
  for (int64_t q = 0; q < G; ++q) parts.push_back(w.narrow(0, q * H + u0, n));
  return at::cat(parts, 0);
}

// fwd: C(Tc·B, G·n) = x_chunk @ wiᵀ, then per step C_t += h_prev @ wᵀ (tmp: pre-activations);
// bwd: per step C(B, H) = dA_t @ w, per chunk dx_chunk = dA_chunk @ wi (tmp: dA of a chunk)
template <typename S>
std::vector<Shard<S>> make_shards(const at::Tensor& w_hh, const at::Tensor& w_ih, int64_t G,
                                  int64_t H, int64_t B, int64_t P, int64_t Tc, bool fwd,
                                  bool gru) {
  const int64_t I = w_ih.size(1);
  const int64_t chunk = (H + P - 1) / P;
  const int64_t step = P == 1 ? H : (chunk + 7) / 8 * 8;
  std::vector<Shard<S>> out;
  out.reserve(P);
  for (int64_t u0 = 0; u0 < H; u0 += step) {
    Shard<S>& k = out.emplace_back();
    k.u0 = u0;
    k.u1 = std::min(H, u0 + step);
    const int64_t n = k.u1 - k.u0;
    k.w = unit_rows(w_hh, G, H, u0, n);
    k.wp = static_cast<S*>(k.w.data_ptr());
    k.wi = unit_rows(w_ih, G, H, u0, n);
    k.wip = static_cast<S*>(k.wi.data_ptr());
    k.tmp = at::empty({Tc * B, G * n}, w_hh.options());
    k.tp = static_cast<S*>(k.tmp.data_ptr());
    if (gru) {
      k.tmp2 = at::empty({fwd ? B : Tc * B, G * n}, w_hh.options());
      k.tp2 = static_cast<S*>(k.tmp2.data_ptr());
    }
    if (fwd) {
      k.pw.emplace(true, B, G * n, H, k.wp, H);
      k.pwi.emplace(true, Tc * B, G * n, I, k.wip, I);
    } else {
      k.pw.emplace(false, B, H, G * n, k.wp, H);
      k.pwi.emplace(false, Tc * B, I, G * n, k.wip, I);
    }
  }
  return out;
}

// Steps per chunk: one shard's chunk (rows of G·n) stays within ~256 KB of cache, but keeps
// at least ~512 rows so that the chunk's GEMMs run near peak.
int64_t chunk_steps(int64_t T, int64_t B, int64_t G, int64_t H, int64_t P, int64_t itemsize) {
  const int64_t row_bytes = B * G * ((H + P - 1) / P) * itemsize;
  const int64_t fit = (int64_t(256) << 10) / row_bytes, min_steps = (512 + B - 1) / B;
  return std::clamp<int64_t>(std::max(fit, min_steps), 1, T);
}

// The (G·H, K) gate-major matrix whose unit rows the shards hold as (G·n, K) blocks.
template <typename S>
at::Tensor join_units(const std::vector<Shard<S>>& shards, const std::vector<at::Tensor>& parts,
                      int64_t G, int64_t H) {
  if (shards.size() == 1) return parts[0];
  at::Tensor out = at::empty({G * H, parts[0].size(1)}, parts[0].options());
  for (size_t q = 0; q < shards.size(); ++q) {
    const int64_t n = shards[q].u1 - shards[q].u0;
    for (int64_t g = 0; g < G; ++g)
      out.narrow(0, g * H + shards[q].u0, n).copy_(parts[q].narrow(0, g * n, n));
  }
  return out;
}

// Pull the next step's rows of a (T, B, row) buffer, columns [c0, c0+n) of each of `blocks`
// blocks `bs` apart, towards the cache while this step's GEMM runs: they were written long
// before (the input projection of all steps, or the saved forward) and would stall the
// pointwise pass.
template <typename S>
inline void prefetch_rows(const S* p, int64_t B, int64_t row, int64_t blocks, int64_t bs,
                          int64_t n) {
  constexpr int64_t line = 64 / sizeof(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t q = 0; q < blocks; ++q) {
      const S* r = p + b * row + q * bs;
      for (int64_t j = 0; j < n; j += line) __builtin_prefetch(r + j, 0, 3);
    }
}

// Waits until all `nth` threads have arrived `round` times. A spinning counter: the team meets
// once per step, and GOMP's barrier costs ~0.4 µs here against ~0.07 µs for this; after a
// while it yields, so an oversubscribed machine is not starved by the spinning.
inline void meet(std::atomic<int64_t>& arrived, int64_t nth, int64_t round) {
  arrived.fetch_add(1, std::memory_order_acq_rel);
  const int64_t want = nth * round;
  for (int64_t spins = 0; arrived.load(std::memory_order_acquire) < want; ++spins) {
    if (spins < 20000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// body(k, step) for every shard k and step, the team meeting after each step; BLAS runs
// single-threaded inside (each thread is one of the team).
template <typename F>
void run_team(int64_t P, int64_t T, const F& body) {
  if (P == 1) {
    for (int64_t step = 0; step < T; ++step) body(0, step);
    return;
  }
#ifdef _OPENMP
  std::exception_ptr error;
  std::atomic<int64_t> arrived{0};
#pragma omp parallel num_threads(static_cast<int>(P))
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int before = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
    for (int64_t step = 0; step < T; ++step) {
      for (int64_t k = tid; k < P; k += nth) {
        try {
          body(k, step);
        } catch (...) {
#pragma omp critical(seqlab_team_error)
          if (!error) error = std::current_exception();
        }
      }
      meet(arrived, nth, step + 1);
    }
    if (before >= 0) MKL_Set_Num_Threads_Local(before);
  }
  if (error) std::rethrow_exception(error);
#else
  for (int64_t step = 0; step < T; ++step)
    for (int64_t k = 0; k < P; ++k) body(k, step);
#endif
}

template <typename S>
std::vector<at::Tensor> forward_impl(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const at::Tensor& bias,
                                     const at::Tensor& b_hh, const at::Tensor& len, bool reverse,
                                     bool save) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const int64_t G = gates_width(mode);
  const Kernels<S>& k = kernels<S>();
  at::Tensor x2 = x.view({T * B, I});
  const int64_t gs = mode == GRU ? 4 * H : G * H;  // torch.nn GRU: room for hn after r z n
  const bool split = mode != GRU_BEFORE;
  const bool keeps_gates = mode != RNN_TANH && mode != RNN_RELU;  // RNN backward needs only h
  // Saved gates are handed to autograd. LSTM, RNN and the torch.nn GRU project the input chunk
  // by chunk inside the loop and write activated gates only to save them. The reset-before GRU
  // projects every step's input in one GEMM into them (scratch without saving).
  at::Tensor gates;
  if (!split)
    gates = save ? at::empty({T, B, gs}, x.options()) : scratch(GATES, {T, B, gs}, x.options());
  else if (save && keeps_gates)
    gates = at::empty({T, B, gs}, x.options());
  else
    gates = at::empty({keeps_gates ? B : 0, gs}, x.options());  // written, never read
  if (!split) {
    BlasThreads bt(T * B * I * G * H);
    at::Tensor xw = gates.view({T * B, gs}).narrow(1, 0, G * H);
    if (bias.defined())
      at::addmm_out(xw, bias, x2, w_ih.t());
    else
      at::mm_out(xw, x2, w_ih.t());
  }
  at::Tensor hbuf = at::empty({T + 1, B, H}, x.options());
  at::Tensor cbuf = mode != LSTM ? at::empty({0}, x.options())
                    : save       ? at::empty({T + 1, B, H}, x.options())
                                 : scratch(CELLS, {T + 1, B, H}, x.options());
  const int64_t start = reverse ? T : 0, end = reverse ? 0 : T;
  hbuf[start].copy_(h0);
  if (mode == LSTM) cbuf[start].copy_(c0);
  at::Tensor y = len.defined() ? at::empty({T, B, H}, x.options())
                               : hbuf.narrow(0, reverse ? 0 : 1, T);
  at::Tensor tmp = mode == GRU_BEFORE ? at::empty({B, H}, x.options()) : at::Tensor();
  at::Tensor b_hn = mode != GRU          ? at::Tensor()
                    : b_hh.defined()     ? b_hh.narrow(0, 2 * H, H).contiguous()
                                         : at::zeros({H}, x.options());

  S* g = gates.data_ptr<S>();
  const bool per_step_gates = !split || (save && keeps_gates);
  S* hb = hbuf.data_ptr<S>();
  S* cb = mode == LSTM ? cbuf.data_ptr<S>() : nullptr;
  const S* whh = w_hh.data_ptr<S>();
  Step<S> s;
  s.H = H;
  s.gs = gs;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.tmp = tmp.defined() ? tmp.data_ptr<S>() : nullptr;
  s.bhn = b_hn.defined() ? b_hn.data_ptr<S>() : nullptr;
  S* yb = len.defined() ? y.data_ptr<S>() : nullptr;
  s.u0 = 0;
  s.u1 = H;
  auto place = [&](Step<S>& st, int64_t step) {
    const int64_t t = reverse ? T - 1 - step : step;
    const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
    st.t = t;
    st.g = per_step_gates ? g + t * B * gs : g;
    st.hp = hb + prev * B * H;
    st.hc = hb + cur * B * H;
    if (cb) {
      st.cp = cb + prev * B * H;
      st.cc = cb + cur * B * H;
    }
    st.y = yb ? yb + t * B * H : nullptr;
  };
  if (T == 0 || B == 0 || H == 0) {
    // nothing to loop over: h_n = h0 (T = 0) or an empty tensor; the team code below
    // divides by B·H and assumes at least one shard
  } else if (split) {
    const RowFn<S> fn = mode == LSTM     ? k.lstm_fwd
                        : mode == GRU    ? k.gru_fwd
                        : mode == RNN_TANH ? k.tanh_fwd
                                           : k.relu_fwd;
    const int64_t P0 = team_size(B, G, H);
    const int64_t Tc = chunk_steps(T, B, G, H, P0, sizeof(S));
    std::vector<Shard<S>> shards =
        make_shards<S>(w_hh, w_ih, G, H, B, P0, Tc, true, mode == GRU);
    const int64_t P = static_cast<int64_t>(shards.size());
    at::Tensor zero_bias = bias.defined() ? bias : at::zeros({G * H}, x.options());
    s.bias = zero_bias.data_ptr<S>();
    std::optional<BlasThreads> loop_threads;
    if (P == 1) loop_threads.emplace(B * G * H * H);
    const S* xb = x2.data_ptr<S>();
    run_team(P, T, [&](int64_t q, int64_t step) {
      const Shard<S>& sh = shards[q];
      const int64_t n = sh.u1 - sh.u0, c0 = step / Tc * Tc, L = std::min(Tc, T - c0);
      const int64_t t_lo = reverse ? T - c0 - L : c0;  // first time index of this chunk
      if (step == c0)  // this shard's input projection for the chunk's L steps
        gemm_p<S>(*sh.pwi, true, L * B, G * n, I, xb + t_lo * B * I, I, sh.wip, I, false, sh.tp,
                  G * n);
      Step<S> st = s;
      place(st, step);
      st.u0 = sh.u0;
      st.u1 = sh.u1;
      S* pre = sh.tp + (st.t - t_lo) * B * G * n;
      st.ak = pre;
      if (mode == GRU) {  // r multiplies the recurrent n-block: keep h_prev @ Wᵀ apart
        gemm_p<S>(*sh.pw, true, B, G * n, H, st.hp, H, sh.wp, H, false, sh.tp2, G * n);
        st.hw = sh.tp2;
      } else {
        gemm_p<S>(*sh.pw, true, B, G * n, H, st.hp, H, sh.wp, H, true, pre, G * n);
      }
      if (P == 1)
        rows<S>(fn, st, B, G * H);
      else
        fn(st, 0, B);
    });
  } else {  // GRU_BEFORE
    BlasThreads loop_threads(B * G * H * H);
    const bool one =  // the step's GEMM runs on one thread: panels beat MKL there
        loop_threads.previous >= 0 || at::get_num_threads() == 1 || at::in_parallel_region();
    PackedW<S> pw(true, B, 2 * H, H, whh, H, one);
    PackedW<S> pwn(true, B, H, H, whh + 2 * H * H, H, one);
    for (int64_t step = 0; step < T; ++step) {
      place(s, step);
      gemm_p<S>(pw, true, B, 2 * H, H, s.hp, H, whh, H, true, s.g, gs);
      rows<S>(k.grub_fwd1, s, B, 2 * H);
      gemm_p<S>(pwn, true, B, H, H, s.tmp, H, whh + 2 * H * H, H, true, s.g + 2 * H, gs);
      rows<S>(k.grub_fwd2, s, B, 2 * H);
    }
  }
  at::Tensor empty = at::empty({0}, x.options());
  at::Tensor hn = hbuf[end].clone();
  at::Tensor cn = mode == LSTM ? cbuf[end].clone() : empty;
  return {y, hn, cn, hbuf, save ? cbuf : empty, save && keeps_gates ? gates : empty};
}

// out[j] += Σ_r A[r][j] for a row-major (R, N) block
template <typename S>
void column_sums(int64_t R, int64_t N, const S* A, S* out) {
  for (int64_t r = 0; r < R; ++r) {
    const S* __restrict a = A + r * N;
    S* __restrict o = out;
    for (int64_t j = 0; j < N; ++j) o[j] += a[j];
  }
}

template <typename S>
std::vector<at::Tensor> backward_impl(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, bool has_b_ih, bool has_b_hh,
                                      const at::Tensor& len, bool reverse, const at::Tensor& hbuf,
                                      const at::Tensor& cbuf, const at::Tensor& gates,
                                      const at::Tensor& gy, const at::Tensor& ghn,
                                      const at::Tensor& gcn) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = hbuf.size(2);
  const int64_t G = gates_width(mode), GH = G * H;
  const int64_t gs = mode == GRU ? 4 * H : GH;
  const Kernels<S>& k = kernels<S>();
  auto opts = x.options();
  if (T == 0 || B == 0 || H == 0) {  // no step ran: every dA is empty, so the sums are zero
    at::Tensor empty = at::empty({0}, opts);
    return {at::zeros({T, B, I}, opts), ghn.clone(), mode == LSTM ? gcn.clone() : empty,
            at::zeros({GH, I}, opts), at::zeros({GH, H}, opts),
            has_b_ih ? at::zeros({GH}, opts) : empty, has_b_hh ? at::zeros({GH}, opts) : empty};
  }
  const bool split = mode != GRU_BEFORE;
  // The reset-before GRU keeps every step's dA for the weight GEMMs after the loop; the
  // others only a chunk's
  at::Tensor da = split ? at::Tensor() : scratch(DA, {T, B, GH}, opts);
  at::Tensor dh = ghn.clone(), dhn = at::empty({B, H}, opts);
  at::Tensor dc = mode == LSTM ? gcn.clone() : at::empty({0}, opts);
  at::Tensor tmp = mode == GRU_BEFORE ? at::empty({B, H}, opts) : at::Tensor();

  const S* g = gates.numel() ? gates.data_ptr<S>() : nullptr;
  const S* hb = hbuf.data_ptr<S>();
  const S* cb = mode == LSTM ? cbuf.data_ptr<S>() : nullptr;
  const S* whh = w_hh.data_ptr<S>();
  S* dab = split ? nullptr : da.data_ptr<S>();
  Step<S> s;
  s.H = H;
  s.gs = gs;
  s.das = GH;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.tmp = tmp.defined() ? tmp.data_ptr<S>() : nullptr;
  s.dc = mode == LSTM ? dc.data_ptr<S>() : nullptr;
  // dL/dy: contiguous, or (as from out.sum()) one (H,) row broadcast over T and B: no copy
  at::Tensor gyc = gy;
  int64_t gts = B * H;
  s.gys = H;
  if (gy.dim() == 3 && gy.stride(0) == 0 && gy.stride(1) == 0) {
    gyc = gy[0][0].contiguous();
    gts = 0;
    s.gys = 0;
  } else if (!gy.is_contiguous()) {
    gyc = gy.contiguous();
  }
  const S* gyb = gyc.data_ptr<S>();
  s.u0 = 0;
  s.u1 = H;
  auto place = [&](Step<S>& st, int64_t step) {
    const int64_t t = reverse ? step : T - 1 - step;
    const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
    st.t = t;
    st.g = g ? const_cast<S*>(g) + t * B * gs : nullptr;
    st.hp = hb + prev * B * H;
    st.hc = const_cast<S*>(hb) + cur * B * H;
    if (cb) {
      st.cp = cb + prev * B * H;
      st.cc = const_cast<S*>(cb) + cur * B * H;
    }
    st.gy = gyb + t * gts;
    if (dab) st.da = dab + t * B * GH;
  };
  std::optional<BlasThreads> loop_threads;
  if (split) {
    const RowFn<S> fn = mode == LSTM     ? k.lstm_bwd
                        : mode == GRU    ? k.gru_bwd
                        : mode == RNN_TANH ? k.tanh_bwd
                                           : k.relu_bwd;
    const bool gru = mode == GRU;  // its recurrent dA differs from the input one (in tmp2)
    const int64_t P0 = team_size(B, G, H);
    const int64_t Tc = chunk_steps(T, B, G, H, P0, sizeof(S));
    std::vector<Shard<S>> shards = make_shards<S>(w_hh, w_ih, G, H, B, P0, Tc, false, gru);
    const int64_t P = static_cast<int64_t>(shards.size());
    // dL/dh_prev of a step = direct[par] (+ the team's partial GEMM sums part[par][q]);
    // two parities so that a step's writes never meet the previous step's reads
    at::Tensor direct = at::empty({2, B, H}, opts);
    direct[1].copy_(ghn);
    at::Tensor part = P == 1 ? at::Tensor() : at::empty({2, P, B, H}, opts);
    at::Tensor dsum = P == 1 ? at::Tensor() : ghn.clone();  // the summed dh of this step
    S* dir = direct.data_ptr<S>();
    S* prt = P == 1 ? nullptr : part.data_ptr<S>();
    S* dsb = P == 1 ? nullptr : dsum.data_ptr<S>();
    // per shard: its rows of dW_ih, dW_hh, the bias gradients, and its share of dx
    std::vector<at::Tensor> dwi, dwh, dbk, dbkr, dxs;
    at::Tensor dx = at::empty({T * B, I}, opts);
    for (int64_t q = 0; q < P; ++q) {
      const int64_t GN = G * (shards[q].u1 - shards[q].u0);
      dwi.push_back(at::zeros({GN, I}, opts));
      dwh.push_back(at::zeros({GN, H}, opts));
      dbk.push_back(at::zeros({GN, 1}, opts));
      if (gru) dbkr.push_back(at::zeros({GN, 1}, opts));
      dxs.push_back(q == 0 ? dx : at::empty({T * B, I}, opts));
    }
    const S* xb = x.data_ptr<S>();
    if (P == 1) loop_threads.emplace(B * G * H * H);
    run_team(P, T, [&](int64_t q, int64_t step) {
      const Shard<S>& sh = shards[q];
      const int64_t n = sh.u1 - sh.u0, GN = G * n, par = step & 1;
      const int64_t c0 = step / Tc * Tc, L = std::min(Tc, T - c0);
      const int64_t t_lo = reverse ? c0 : T - c0 - L;  // first time index of this chunk
      Step<S> st = s;
      place(st, step);
      st.u0 = sh.u0;
      st.u1 = sh.u1;
      st.dhn = dir + par * B * H;
      st.dak = sh.tp + (st.t - t_lo) * B * GN;
      if (gru) st.dakr = sh.tp2 + (st.t - t_lo) * B * GN;
      const S* drec = gru ? st.dakr : st.dak;  // what multiplies W_hh
      if (P == 1) {
        st.dh = dir + (1 - par) * B * H;
        rows<S>(fn, st, B, GN);
        gemm_p<S>(*sh.pw, false, B, H, GN, drec, GN, sh.wp, H, true, st.dhn, H);
      } else {
        if (step > 0) {  // this shard's columns of dh = direct + every shard's partial
          const S* d0 = dir + (1 - par) * B * H;
          const S* p0 = prt + (1 - par) * P * B * H;
          for (int64_t b = 0; b < B; ++b) {
            S* __restrict out = dsb + b * H + sh.u0;
            const S* __restrict d = d0 + b * H + sh.u0;
            for (int64_t j = 0; j < n; ++j) out[j] = d[j];
            for (int64_t r = 0; r < P; ++r) {
              const S* __restrict pr = p0 + (r * B + b) * H + sh.u0;
              for (int64_t j = 0; j < n; ++j) out[j] += pr[j];
            }
          }
        }
        st.dh = dsb;
        fn(st, 0, B);
        if (step + 1 < T) {  // the next step's saved gates and cells, during this GEMM
          const int64_t next = reverse ? step + 1 : T - 2 - step;
          if (g) prefetch_rows<S>(g + next * B * gs + sh.u0, B, gs, G, H, n);
          if (cb) prefetch_rows<S>(cb + next * B * H + sh.u0, B, H, 1, 0, n);
        }
        gemm_p<S>(*sh.pw, false, B, H, GN, drec, GN, sh.wp, H, false,
                  prt + (par * P + q) * B * H, H);
      }
      if (step == c0 + L - 1) {  // the chunk is done: its share of the weight gradients and dx
        const int64_t R = L * B;
        const S* hprev = hb + (t_lo + (reverse ? 1 : 0)) * B * H;
        gemm_ta<S>(GN, I, R, sh.tp, GN, xb + t_lo * B * I, I, true, dwi[q].data_ptr<S>(), I);
        const S* rec = gru ? sh.tp2 : sh.tp;
        gemm_ta<S>(GN, H, R, rec, GN, hprev, H, true, dwh[q].data_ptr<S>(), H);
        column_sums<S>(R, GN, sh.tp, dbk[q].data_ptr<S>());
        if (gru) column_sums<S>(R, GN, rec, dbkr[q].data_ptr<S>());
        gemm_p<S>(*sh.pwi, false, R, I, GN, sh.tp, GN, sh.wip, I, false,
                  dxs[q].data_ptr<S>() + t_lo * B * I, I);
      }
    });
    loop_threads.reset();
    const int64_t last = (T - 1) & 1;
    dh = direct[last];
    if (P > 1) dh = dh.add(part[last].sum(0));
    for (int64_t q = 1; q < P; ++q) dx.add_(dxs[q]);
    at::Tensor empty = at::empty({0}, opts);
    at::Tensor db = join_units(shards, dbk, G, H).view({G * H});
    at::Tensor db_ih = has_b_ih ? db : empty;
    at::Tensor db_hh = !has_b_hh ? empty
                       : gru     ? join_units(shards, dbkr, G, H).view({G * H})
                       : has_b_ih ? db.clone()
                                  : db;
    return {dx.view({T, B, I}), dh, mode == LSTM ? dc : empty, join_units(shards, dwi, G, H),
            join_units(shards, dwh, G, H), db_ih, db_hh};
  } else {
    // GRU_BEFORE: the n-block of W_hh gets its own product (it multiplies r ⊙ h_prev)
    loop_threads.emplace(B * G * H * H);
    const bool one =
        loop_threads->previous >= 0 || at::get_num_threads() == 1 || at::in_parallel_region();
    PackedW<S> pw(false, B, H, 2 * H, whh, H, one);
    PackedW<S> pwn(false, B, H, H, whh + 2 * H * H, H, one);
    for (int64_t step = 0; step < T; ++step) {
      place(s, step);
      s.dh = dh.data_ptr<S>();
      s.dhn = dhn.data_ptr<S>();
      rows<S>(k.grub_bwd1, s, B, 2 * H);
      gemm_p<S>(pwn, false, B, H, H, s.da + 2 * H, GH, whh + 2 * H * H, H, false, s.tmp, H);
      rows<S>(k.grub_bwd2, s, B, 3 * H);
      gemm_p<S>(pw, false, B, H, 2 * H, s.da, GH, whh, H, true, s.dhn, H);
      std::swap(dh, dhn);
    }
  }
  loop_threads.reset();
  BlasThreads after_threads(T * B * GH * std::min(I, H));
  at::Tensor empty = at::empty({0}, opts);
  at::Tensor da2 = da.view({T * B, GH});
  at::Tensor x2 = x.view({T * B, I});
  at::Tensor hprev = hbuf.narrow(0, reverse ? 1 : 0, T).view({T * B, H});
  at::Tensor dx = at::mm(da2, w_ih), dw_ih = at::mm(da2.t(), x2);
  at::Tensor db_ih = has_b_ih ? da2.sum(0) : empty, db_hh = empty;
  at::Tensor rh = gates.narrow(2, 0, H).reshape({T * B, H}).mul(hprev);
  at::Tensor dw_hh = at::cat({at::mm(da2.narrow(1, 0, 2 * H).t(), hprev),
                              at::mm(da2.narrow(1, 2 * H, H).t(), rh)}, 0);
  if (has_b_hh) db_hh = has_b_ih ? db_ih.clone() : da2.sum(0);
  return {dx.view({T, B, I}), dh, empty, dw_ih, dw_hh, db_ih, db_hh};
}

at::Tensor opt(const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

std::vector<at::Tensor> forward(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                const std::optional<at::Tensor>& b_hh,
                                const std::optional<at::Tensor>& lengths, bool reverse,
                                bool save) {
  at::Tensor bih = opt(b_ih), bhh = opt(b_hh), bias;
  check_forward(mode, x, h0, opt(c0), w_ih, w_hh, bih, bhh, opt(lengths));
  const int64_t H = h0.size(1);
  // projection bias: b_ih + b_hh, except the torch.nn GRU's b_hn (it sits inside r ⊙ (...))
  if (bhh.defined()) {
    bias = bhh;
    if (mode == GRU) bias = at::cat({bhh.narrow(0, 0, 2 * H), at::zeros({H}, bhh.options())});
    if (bih.defined()) bias = bias.add(bih);
  } else if (bih.defined()) {
    bias = bih;
  }
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_forward", [&] {
    return forward_impl<scalar_t>(mode, x, h0, opt(c0), w_ih, w_hh, bias, bhh, opt(lengths),
                                  reverse, save);
  });
}

std::vector<at::Tensor> backward(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, bool has_b_ih, bool has_b_hh,
                                 const std::optional<at::Tensor>& lengths, bool reverse,
                                 const at::Tensor& hbuf, const at::Tensor& cbuf,
                                 const at::Tensor& gates, const at::Tensor& gy,
                                 const at::Tensor& ghn, const std::optional<at::Tensor>& gcn) {
  check_backward(mode, x, w_ih, w_hh, opt(lengths), hbuf, cbuf, gates, gy, ghn, opt(gcn));
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_backward", [&] {
    return backward_impl<scalar_t>(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, opt(lengths),
                                   reverse, hbuf, cbuf, gates, gy, ghn, opt(gcn));
  });
}

std::string isa() { return cpu_has_avx2() ? "avx2+fma" : "baseline"; }

}  // namespace

TORCH_LIBRARY(seqlab_engine, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("isa", &isa);
}
