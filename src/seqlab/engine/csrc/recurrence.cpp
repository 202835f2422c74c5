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
//
// Layout: steps.h (what a row kernel sees), kernels.h (the row kernels, compiled per ISA),
// gemm.h + panels.h (dense products), team.h (the thread team), checks.h (argument checks);
// here: the cell traits, the team loop (forward_team / backward_team, one per direction, a
// template over the traits), the reset-before GRU's own loop, and the two ops.
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

#include "steps.h"

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
// and once more for AVX-512 (twice the lanes per pointwise instruction)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
namespace seqlab_avx512 {
#include "kernels.h"
}  // namespace seqlab_avx512
#pragma GCC pop_options
#endif

#include "gemm.h"

namespace {

enum Mode : int64_t { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3, GRU_BEFORE = 4 };

#include "checks.h"
#include "team.h"

// A row kernel of the running CPU's instruction set (chosen once by CPUID).
#ifdef SEQLAB_HAVE_AVX2
#define SEQLAB_ISA(...) (cpu_has_avx2() ? &seqlab_avx2::__VA_ARGS__ : &seqlab_base::__VA_ARGS__)
// kernels.h's own row kernels also have an AVX-512 copy
#define SEQLAB_ISA3(...) (cpu_has_avx512() ? &seqlab_avx512::__VA_ARGS__ : SEQLAB_ISA(__VA_ARGS__))
#else
#define SEQLAB_ISA(...) (&seqlab_base::__VA_ARGS__)
#define SEQLAB_ISA3(...) (&seqlab_base::__VA_ARGS__)
#endif

template <typename S>
using FwdRows = void (*)(const FwdStep<S>&, int64_t, int64_t);
template <typename S>
using BwdRows = void (*)(const BwdStep<S>&, int64_t, int64_t);

// ---- cell traits: what the team loop needs to know about a cell kind
//   G            gate blocks per hidden unit (rows of W_ih and W_hh are G·H)
//   gate_stride  row width of the saved gates (GRU: [r z n hn], room for hn)
//   has_c        a cell state c beside h (LSTM)
//   keeps_gates  the backward reads saved gates (RNN recomputes from h)
//   apart        the recurrent product h_prev W_hhᵀ is kept apart from the input one (GRU:
//                r multiplies its n-block), with its own dA in the backward
//   fold_bias    the bias added to the input projection; recurrent_bias what stays apart
//   fwd / bwd    the row kernels

// b_ih + b_hh (either may be absent)
inline at::Tensor sum_bias(const at::Tensor& b_ih, const at::Tensor& b_hh) {
  if (b_hh.defined()) return b_ih.defined() ? b_hh.add(b_ih) : b_hh;
  return b_ih;
}

struct LstmCell {
  static constexpr int64_t G = 4;
  static constexpr bool has_c = true, keeps_gates = true, apart = false;
  static int64_t gate_stride(int64_t H) { return G * H; }
  static at::Tensor fold_bias(const at::Tensor& b_ih, const at::Tensor& b_hh, int64_t) {
    return sum_bias(b_ih, b_hh);
  }
  static at::Tensor recurrent_bias(const at::Tensor&, int64_t, const at::TensorOptions&) {
    return at::Tensor();
  }
  template <typename S>
  static FwdRows<S> fwd() { return SEQLAB_ISA3(lstm_fwd<S>); }
  template <typename S>
  static BwdRows<S> bwd() { return SEQLAB_ISA3(lstm_bwd<S>); }
};

template <bool RELU>
struct RnnCell {
  static constexpr int64_t G = 1;
  static constexpr bool has_c = false, keeps_gates = false, apart = false;
  static int64_t gate_stride(int64_t H) { return G * H; }
  static at::Tensor fold_bias(const at::Tensor& b_ih, const at::Tensor& b_hh, int64_t) {
    return sum_bias(b_ih, b_hh);
  }
  static at::Tensor recurrent_bias(const at::Tensor&, int64_t, const at::TensorOptions&) {
    return at::Tensor();
  }
  template <typename S>
  static FwdRows<S> fwd() { return SEQLAB_ISA3(rnn_fwd<S, RELU>); }
  template <typename S>
  static BwdRows<S> bwd() { return SEQLAB_ISA3(rnn_bwd<S, RELU>); }
};

// the torch.nn GRU (reset after): n = tanh(a_n + r ⊙ (h W_hnᵀ + b_hn))
struct GruCell {
  static constexpr int64_t G = 3;
  static constexpr bool has_c = false, keeps_gates = true, apart = true;
  static int64_t gate_stride(int64_t H) { return 4 * H; }
  // b_hn sits inside r ⊙ (...) and cannot move into the projection
  static at::Tensor fold_bias(const at::Tensor& b_ih, const at::Tensor& b_hh, int64_t H) {
    if (!b_hh.defined()) return b_ih;
    at::Tensor fold = at::cat({b_hh.narrow(0, 0, 2 * H), at::zeros({H}, b_hh.options())});
    return b_ih.defined() ? fold.add(b_ih) : fold;
  }
  static at::Tensor recurrent_bias(const at::Tensor& b_hh, int64_t H,
                                   const at::TensorOptions& opts) {
    return b_hh.defined() ? b_hh.narrow(0, 2 * H, H).contiguous() : at::zeros({H}, opts);
  }
  template <typename S>
  static FwdRows<S> fwd() { return SEQLAB_ISA3(gru_fwd<S>); }
  template <typename S>
  static BwdRows<S> bwd() { return SEQLAB_ISA3(gru_bwd<S>); }
};

// fn(s, b0, b1) over all B rows: parallel over rows once a step has enough work to pay for
// waking a thread
template <typename Step>
void rows(void (*fn)(const Step&, int64_t, int64_t), const Step& s, int64_t B, int64_t width) {
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1));
  if (B <= grain) {
    fn(s, 0, B);
  } else {
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { fn(s, b0, b1); });
  }
}

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

// Buffers that outlive the call (saved for the backward, or handed to the caller, released
// later) from a small per-thread pool: a buffer is handed out again once nothing but the pool
// holds its storage. Fresh ones cost their page faults on every training step (~20 % of an
// LN-LSTM forward at C1; ~8 % of a minLSTM training step at T=1000, B=16, H=256, whose 49 MB
// projection glibc maps and unmaps on every call). The pool keeps at most kPoolBuffers buffers
// and kScratchMaxBytes alive per thread.
constexpr size_t kPoolBuffers = 16;

at::Tensor pooled(at::IntArrayRef shape, const at::TensorOptions& opts) {
  thread_local std::vector<at::Tensor> pool;
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const int64_t bytes = numel * static_cast<int64_t>(opts.dtype().itemsize());
  if (numel == 0 || bytes > kScratchMaxBytes)
    return at::empty(shape, opts);  // (an empty view would pin a pooled buffer for nothing)
  at::Tensor* best = nullptr;  // the smallest free buffer that fits
  int64_t held = 0;
  for (at::Tensor& t : pool) {
    held += t.nbytes();
    if (t.storage().use_count() == 1 && t.dtype() == opts.dtype() && t.numel() >= numel &&
        (best == nullptr || t.numel() < best->numel()))
      best = &t;
  }
  if (best == nullptr) {
    if (pool.size() >= kPoolBuffers || held + bytes > kScratchMaxBytes)
      return at::empty(shape, opts);
    pool.push_back(at::empty({numel}, opts));
    best = &pool.back();
  }
  return best->narrow(0, 0, numel).view(shape);
}

// The state buffers of a forward: hbuf (T+1, B, H) and, with a cell state, cbuf, with the
// initial state in place (index T when reversed); y is a view of hbuf unless lengths mask it.
struct States {
  at::Tensor hbuf, cbuf, y;
};

States make_states(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, bool has_c,
                   const at::Tensor& len, bool reverse, bool save) {
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  States st;
  st.hbuf = at::empty({T + 1, B, H}, x.options());
  st.cbuf = !has_c ? at::empty({0}, x.options())
            : save ? at::empty({T + 1, B, H}, x.options())
                   : scratch(CELLS, {T + 1, B, H}, x.options());
  const int64_t start = reverse ? T : 0;
  st.hbuf[start].copy_(h0);
  if (has_c) st.cbuf[start].copy_(c0);
  st.y = len.defined() ? at::empty({T, B, H}, x.options())
                       : st.hbuf.narrow(0, reverse ? 0 : 1, T);
  return st;
}

// (y, h_n, c_n, hbuf, cbuf, gates) as the forward op returns them
std::vector<at::Tensor> forward_outputs(const States& st, const at::Tensor& gates, bool has_c,
                                        bool keep_gates, bool reverse, bool save) {
  const int64_t T = st.hbuf.size(0) - 1, end = reverse ? 0 : T;
  at::Tensor empty = at::empty({0}, st.hbuf.options());
  at::Tensor hn = st.hbuf[end].clone();
  at::Tensor cn = has_c ? st.cbuf[end].clone() : empty;
  return {st.y, hn, cn, st.hbuf, save ? st.cbuf : empty, save && keep_gates ? gates : empty};
}

// ---- the team loop, forward: per chunk of steps each shard projects its units' inputs, per
// step it adds its share of the recurrent product and runs its units' row kernel
//
// With a recurrent dropout mask m (B, H) the recurrent product reads hm = h_prev ⊙ m: hm of
// h0 is formed before the loop, and each shard writes its units' slice of hm of the h it
// just computed into the other of two parity buffers (read by everyone after the barrier).
// Masked is a template parameter: the unmasked loop compiles without any of the mask's code.
template <typename Cell, typename S, bool Masked>
std::vector<at::Tensor> forward_team(const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const at::Tensor& b_ih,
                                     const at::Tensor& b_hh, const at::Tensor& len, bool reverse,
                                     bool save, const at::Tensor& hmask) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  constexpr int64_t G = Cell::G;
  const int64_t gs = Cell::gate_stride(H);
  // Activated gates are written only to be saved (the input is projected chunk by chunk
  // inside the loop); without saving, one step's worth is written and never read.
  const bool per_step_gates = save && Cell::keeps_gates;
  at::Tensor gates = per_step_gates ? at::empty({T, B, gs}, x.options())
                                    : at::empty({Cell::keeps_gates ? B : 0, gs}, x.options());
  States sb = make_states(x, h0, c0, Cell::has_c, len, reverse, save);
  if (T == 0 || B == 0 || H == 0)  // nothing to loop over (the team setup divides by B·H)
    return forward_outputs(sb, gates, Cell::has_c, Cell::keeps_gates, reverse, save);
  at::Tensor bias = Cell::fold_bias(b_ih, b_hh, H);
  if (!bias.defined()) bias = at::zeros({G * H}, x.options());
  at::Tensor brec = Cell::recurrent_bias(b_hh, H, x.options());

  FwdStep<S> s;
  s.H = H;
  s.gs = gs;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.bias = bias.data_ptr<S>();
  s.bhn = brec.defined() ? brec.data_ptr<S>() : nullptr;
  S* g = gates.data_ptr<S>();
  S* hb = sb.hbuf.data_ptr<S>();
  S* cb = Cell::has_c ? sb.cbuf.data_ptr<S>() : nullptr;
  S* yb = len.defined() ? sb.y.data_ptr<S>() : nullptr;
  constexpr bool masked = Masked;
  at::Tensor hmbuf = masked ? at::empty({2, B, H}, x.options()) : at::Tensor();
  if constexpr (masked) hmbuf[0].copy_(h0.mul(hmask));  // hm of step 0 (parity 0)
  S* hmb = masked ? hmbuf.data_ptr<S>() : nullptr;
  const S* mk = masked ? hmask.data_ptr<S>() : nullptr;
  auto place = [&](FwdStep<S>& st, int64_t step) {
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

  const FwdRows<S> fn = Cell::template fwd<S>();
  const int64_t P0 = team_size(B, G, H);
  const int64_t Tc = chunk_steps(T, B, G, H, P0, sizeof(S));
  std::vector<Shard<S>> shards =
      make_shards<S>(w_hh, w_ih, G, H, B, P0, Tc, true, Cell::apart, T);
  const int64_t P = static_cast<int64_t>(shards.size());
  std::optional<BlasThreads> loop_threads;
  if (P == 1) loop_threads.emplace(B * G * H * H);
  const S* xb = x.data_ptr<S>();
  run_team(P, T, [&](int64_t q, int64_t step) {
    const Shard<S>& sh = shards[q];
    const int64_t n = sh.u1 - sh.u0, c0 = step / Tc * Tc, L = std::min(Tc, T - c0);
    const int64_t t_lo = reverse ? T - c0 - L : c0;  // first time index of this chunk
    if (step == c0)  // this shard's input projection for the chunk's L steps
      gemm_p<S>(*sh.pwi, true, L * B, G * n, I, xb + t_lo * B * I, I, sh.wip, I, false, sh.tp,
                G * n);
    FwdStep<S> st = s;
    place(st, step);
    st.u0 = sh.u0;
    st.u1 = sh.u1;
    S* pre = sh.tp + (st.t - t_lo) * B * G * n;
    st.ak = pre;
    const S* hr = masked ? hmb + (step & 1) * B * H : st.hp;  // what W_hh multiplies
    if constexpr (Cell::apart) {  // h_prev @ Wᵀ on its own (GRU: r multiplies the n-block)
      gemm_p<S>(*sh.pw, true, B, G * n, H, hr, H, sh.wp, H, false, sh.tp2, G * n);
      st.hw = sh.tp2;
    } else {
      gemm_p<S>(*sh.pw, true, B, G * n, H, hr, H, sh.wp, H, true, pre, G * n);
    }
    if (P == 1)
      rows<FwdStep<S>>(fn, st, B, G * H);
    else
      fn(st, 0, B);
    if constexpr (masked) {  // this shard's units of the next step's hm
      if (step + 1 == T) return;
      S* out = hmb + ((step + 1) & 1) * B * H;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = b * H;
        const S* __restrict h = st.hc + o;
        const S* __restrict m = mk + o;
        S* __restrict d = out + o;
        for (int64_t j = sh.u0; j < sh.u1; ++j) d[j] = h[j] * m[j];
      }
    }
  });
  return forward_outputs(sb, gates, Cell::has_c, Cell::keeps_gates, reverse, save);
}

// ---- the reset-before GRU, forward: the input projection of all steps in one GEMM (into the
// gates), then per step r, z; the n-block's product of r ⊙ h_prev; n and h
template <typename S>
std::vector<at::Tensor> forward_reset_before(const at::Tensor& x, const at::Tensor& h0,
                                             const at::Tensor& w_ih, const at::Tensor& w_hh,
                                             const at::Tensor& b_ih, const at::Tensor& b_hh,
                                             const at::Tensor& len, bool reverse, bool save) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const int64_t G = 3, gs = G * H;
  at::Tensor gates =
      save ? at::empty({T, B, gs}, x.options()) : scratch(GATES, {T, B, gs}, x.options());
  {
    BlasThreads bt(T * B * I * G * H);
    at::Tensor bias = sum_bias(b_ih, b_hh);
    at::Tensor xw = gates.view({T * B, gs});
    if (bias.defined())
      at::addmm_out(xw, bias, x.view({T * B, I}), w_ih.t());
    else
      at::mm_out(xw, x.view({T * B, I}), w_ih.t());
  }
  States sb = make_states(x, h0, at::Tensor(), false, len, reverse, save);
  if (T == 0 || B == 0 || H == 0) return forward_outputs(sb, gates, false, true, reverse, save);
  at::Tensor tmp = at::empty({B, H}, x.options());
  const S* whh = w_hh.data_ptr<S>();
  S* g = gates.data_ptr<S>();
  S* hb = sb.hbuf.data_ptr<S>();
  S* yb = len.defined() ? sb.y.data_ptr<S>() : nullptr;
  ResetBeforeStep<S> s;
  s.H = H;
  s.gs = gs;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.tmp = tmp.data_ptr<S>();
  const auto fwd1 = SEQLAB_ISA3(grub_fwd1<S>);
  const auto fwd2 = SEQLAB_ISA3(grub_fwd2<S>);
  BlasThreads loop_threads(B * G * H * H);
  const bool one =  // the step's GEMM runs on one thread: panels beat MKL there
      loop_threads.previous >= 0 || at::get_num_threads() == 1 || at::in_parallel_region();
  PackedW<S> pw(true, B, 2 * H, H, whh, H, one, T * B);
  PackedW<S> pwn(true, B, H, H, whh + 2 * H * H, H, one, T * B);
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = reverse ? T - 1 - step : step;
    const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
    s.t = t;
    s.g = g + t * B * gs;
    s.hp = hb + prev * B * H;
    s.hc = hb + cur * B * H;
    s.y = yb ? yb + t * B * H : nullptr;
    gemm_p<S>(pw, true, B, 2 * H, H, s.hp, H, whh, H, true, s.g, gs);
    rows<ResetBeforeStep<S>>(fwd1, s, B, 2 * H);
    gemm_p<S>(pwn, true, B, H, H, s.tmp, H, whh + 2 * H * H, H, true, s.g + 2 * H, gs);
    rows<ResetBeforeStep<S>>(fwd2, s, B, 2 * H);
  }
  return forward_outputs(sb, gates, false, true, reverse, save);
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

// dL/dy: contiguous, or (as from out.sum()) one (H,) row broadcast over T and B (no copy).
// Returns the tensor to read and sets the step stride `gts` and row stride `gys`.
inline at::Tensor output_grad(const at::Tensor& gy, int64_t B, int64_t H, int64_t& gts,
                              int64_t& gys) {
  gts = B * H;
  gys = H;
  if (gy.dim() == 3 && gy.stride(0) == 0 && gy.stride(1) == 0) {
    gts = 0;
    gys = 0;
    return gy[0][0].contiguous();
  }
  return gy.is_contiguous() ? gy : gy.contiguous();
}

// No step ran (T, B or H is 0): every dA is empty, so the sums over steps and rows are zero.
std::vector<at::Tensor> backward_empty(int64_t G, const at::Tensor& x, int64_t H, bool has_c,
                                       bool has_b_ih, bool has_b_hh, const at::Tensor& ghn,
                                       const at::Tensor& gcn) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), GH = G * H;
  auto opts = x.options();
  at::Tensor empty = at::empty({0}, opts);
  return {at::zeros({T, B, I}, opts), ghn.clone(), has_c ? gcn.clone() : empty,
          at::zeros({GH, I}, opts), at::zeros({GH, H}, opts),
          has_b_ih ? at::zeros({GH}, opts) : empty, has_b_hh ? at::zeros({GH}, opts) : empty};
}

// ---- the team loop, backward: per step (in reverse time order) each shard runs its units'
// row kernel for dA and its share of dA @ W_hh (a partial sum over its units, added up by the
// owners next step); per chunk its rows of the weight and bias gradients and its share of dx
template <typename Cell, typename S, bool Masked>
std::vector<at::Tensor> backward_team(const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, bool has_b_ih, bool has_b_hh,
                                      const at::Tensor& len, bool reverse, const at::Tensor& hbuf,
                                      const at::Tensor& cbuf, const at::Tensor& gates,
                                      const at::Tensor& gy, const at::Tensor& ghn,
                                      const at::Tensor& gcn, const at::Tensor& hmask) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = hbuf.size(2);
  constexpr int64_t G = Cell::G;
  if (T == 0 || B == 0 || H == 0)
    return backward_empty(G, x, H, Cell::has_c, has_b_ih, has_b_hh, ghn, gcn);
  // recurrent dropout m: the recurrent path's dh_prev is (dA @ W_hh) ⊙ m, and dW_hh reads
  // h_prev ⊙ m (formed per chunk in a shard's scratch)
  constexpr bool masked = Masked;
  const S* mk = masked ? hmask.data_ptr<S>() : nullptr;
  const int64_t gs = Cell::gate_stride(H);
  auto opts = x.options();
  at::Tensor dc = Cell::has_c ? gcn.clone() : at::empty({0}, opts);
  const S* g = Cell::keeps_gates ? gates.data_ptr<S>() : nullptr;
  const S* hb = hbuf.data_ptr<S>();
  const S* cb = Cell::has_c ? cbuf.data_ptr<S>() : nullptr;
  int64_t gts = 0;
  BwdStep<S> s;
  s.H = H;
  s.gs = gs;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.dc = Cell::has_c ? dc.data_ptr<S>() : nullptr;
  at::Tensor gyc = output_grad(gy, B, H, gts, s.gys);
  const S* gyb = gyc.data_ptr<S>();
  auto place = [&](BwdStep<S>& st, int64_t step) {
    const int64_t t = reverse ? step : T - 1 - step;
    const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
    st.t = t;
    st.g = g ? g + t * B * gs : nullptr;
    st.hp = hb + prev * B * H;
    st.hc = hb + cur * B * H;
    if (cb) {
      st.cp = cb + prev * B * H;
      st.cc = cb + cur * B * H;
    }
    st.gy = gyb + t * gts;
  };

  const BwdRows<S> fn = Cell::template bwd<S>();
  const int64_t P0 = team_size(B, G, H);
  const int64_t Tc = chunk_steps(T, B, G, H, P0, sizeof(S));
  std::vector<Shard<S>> shards =
      make_shards<S>(w_hh, w_ih, G, H, B, P0, Tc, false, Cell::apart, T);
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
  std::vector<at::Tensor> dwi, dwh, dbk, dbkr, dxs, hms;
  at::Tensor dx = at::empty({T * B, I}, opts);
  at::Tensor mprod = masked && P == 1 ? at::empty({B, H}, opts) : at::Tensor();
  for (int64_t q = 0; q < P; ++q) {
    const int64_t GN = G * (shards[q].u1 - shards[q].u0);
    if constexpr (masked) hms.push_back(at::empty({Tc * B, H}, opts));
    dwi.push_back(at::zeros({GN, I}, opts));
    dwh.push_back(at::zeros({GN, H}, opts));
    dbk.push_back(at::zeros({GN, 1}, opts));
    if (Cell::apart) dbkr.push_back(at::zeros({GN, 1}, opts));
    dxs.push_back(q == 0 ? dx : at::empty({T * B, I}, opts));
  }
  const S* xb = x.data_ptr<S>();
  std::optional<BlasThreads> loop_threads;
  if (P == 1) loop_threads.emplace(B * G * H * H);
  run_team(P, T, [&](int64_t q, int64_t step) {
    const Shard<S>& sh = shards[q];
    const int64_t n = sh.u1 - sh.u0, GN = G * n, par = step & 1;
    const int64_t c0 = step / Tc * Tc, L = std::min(Tc, T - c0);
    const int64_t t_lo = reverse ? c0 : T - c0 - L;  // first time index of this chunk
    BwdStep<S> st = s;
    place(st, step);
    st.u0 = sh.u0;
    st.u1 = sh.u1;
    st.dhn = dir + par * B * H;
    st.dak = sh.tp + (st.t - t_lo) * B * GN;
    if (Cell::apart) st.dakr = sh.tp2 + (st.t - t_lo) * B * GN;
    const S* drec = Cell::apart ? st.dakr : st.dak;  // what multiplies W_hh
    if (P == 1) {
      st.dh = dir + (1 - par) * B * H;
      rows<BwdStep<S>>(fn, st, B, GN);
      if constexpr (!masked) {
        gemm_p<S>(*sh.pw, false, B, H, GN, drec, GN, sh.wp, H, true, st.dhn, H);
      } else {
        S* mp = mprod.data_ptr<S>();
        gemm_p<S>(*sh.pw, false, B, H, GN, drec, GN, sh.wp, H, false, mp, H);
        S* __restrict d = st.dhn;
        for (int64_t i = 0; i < B * H; ++i) d[i] += mp[i] * mk[i];
      }
    } else {
      if (step > 0) {  // this shard's columns of dh = direct + every shard's partial
        const S* d0 = dir + (1 - par) * B * H;
        const S* p0 = prt + (1 - par) * P * B * H;
        for (int64_t b = 0; b < B; ++b) {
          S* __restrict out = dsb + b * H + sh.u0;
          const S* __restrict d = d0 + b * H + sh.u0;
          if constexpr (masked) {  // the partials sum (dA @ W_hh), which the mask scales
            for (int64_t j = 0; j < n; ++j) out[j] = S(0);
          } else {
            for (int64_t j = 0; j < n; ++j) out[j] = d[j];
          }
          for (int64_t r = 0; r < P; ++r) {
            const S* __restrict pr = p0 + (r * B + b) * H + sh.u0;
            for (int64_t j = 0; j < n; ++j) out[j] += pr[j];
          }
          if constexpr (masked) {
            const S* __restrict m = mk + b * H + sh.u0;
            for (int64_t j = 0; j < n; ++j) out[j] = d[j] + out[j] * m[j];
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
      if constexpr (masked) {  // the chunk's h_prev ⊙ m, all H columns (its dW_hh rows read all)
        S* hm = hms[q].data_ptr<S>();
        for (int64_t r = 0; r < R; ++r) {
          const S* __restrict h = hprev + r * H;
          const S* __restrict m = mk + (r % B) * H;
          S* __restrict d = hm + r * H;
          for (int64_t j = 0; j < H; ++j) d[j] = h[j] * m[j];
        }
        hprev = hm;
      }
      gemm_ta<S>(GN, I, R, sh.tp, GN, xb + t_lo * B * I, I, true, dwi[q].data_ptr<S>(), I);
      const S* rec = Cell::apart ? sh.tp2 : sh.tp;
      gemm_ta<S>(GN, H, R, rec, GN, hprev, H, true, dwh[q].data_ptr<S>(), H);
      column_sums<S>(R, GN, sh.tp, dbk[q].data_ptr<S>());
      if (Cell::apart) column_sums<S>(R, GN, rec, dbkr[q].data_ptr<S>());
      gemm_p<S>(*sh.pwi, false, R, I, GN, sh.tp, GN, sh.wip, I, false,
                dxs[q].data_ptr<S>() + t_lo * B * I, I);
    }
  });
  loop_threads.reset();
  const int64_t last = (T - 1) & 1;
  at::Tensor dh = direct[last];
  if (P > 1) dh = dh.add(masked ? part[last].sum(0).mul_(hmask) : part[last].sum(0));
  for (int64_t q = 1; q < P; ++q) dx.add_(dxs[q]);
  at::Tensor empty = at::empty({0}, opts);
  at::Tensor db = join_units(shards, dbk, G, H).view({G * H});
  at::Tensor db_ih = has_b_ih ? db : empty;
  at::Tensor db_hh = !has_b_hh    ? empty
                     : Cell::apart ? join_units(shards, dbkr, G, H).view({G * H})
                     : has_b_ih    ? db.clone()
                                   : db;
  return {dx.view({T, B, I}), dh, Cell::has_c ? dc : empty, join_units(shards, dwi, G, H),
          join_units(shards, dwh, G, H), db_ih, db_hh};
}

// ---- the reset-before GRU, backward: per step dA_n, d(r ⊙ h_prev) = dA_n @ W_hn, then dA_r,
// dA_z and dh_prev; every step's dA is kept for the weight and input gradients, formed after
// the loop as single GEMMs over all T·B rows
template <typename S>
std::vector<at::Tensor> backward_reset_before(const at::Tensor& x, const at::Tensor& w_ih,
                                              const at::Tensor& w_hh, bool has_b_ih,
                                              bool has_b_hh, const at::Tensor& len,
                                              bool reverse, const at::Tensor& hbuf,
                                              const at::Tensor& gates, const at::Tensor& gy,
                                              const at::Tensor& ghn) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = hbuf.size(2);
  const int64_t G = 3, GH = G * H;
  if (T == 0 || B == 0 || H == 0)
    return backward_empty(G, x, H, false, has_b_ih, has_b_hh, ghn, at::Tensor());
  auto opts = x.options();
  at::Tensor da = scratch(DA, {T, B, GH}, opts);
  at::Tensor dh = ghn.clone(), dhn = at::empty({B, H}, opts);
  at::Tensor tmp = at::empty({B, H}, opts);
  const S* g = gates.data_ptr<S>();
  const S* hb = hbuf.data_ptr<S>();
  const S* whh = w_hh.data_ptr<S>();
  S* dab = da.data_ptr<S>();
  int64_t gts = 0;
  ResetBeforeStep<S> s;
  s.H = H;
  s.gs = GH;
  s.das = GH;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.tmp = tmp.data_ptr<S>();
  at::Tensor gyc = output_grad(gy, B, H, gts, s.gys);
  const S* gyb = gyc.data_ptr<S>();
  const auto bwd1 = SEQLAB_ISA3(grub_bwd1<S>);
  const auto bwd2 = SEQLAB_ISA3(grub_bwd2<S>);
  {
    // the n-block of W_hh gets its own product (it multiplies r ⊙ h_prev)
    BlasThreads loop_threads(B * G * H * H);
    const bool one =
        loop_threads.previous >= 0 || at::get_num_threads() == 1 || at::in_parallel_region();
    PackedW<S> pw(false, B, H, 2 * H, whh, H, one, T * B);
    PackedW<S> pwn(false, B, H, H, whh + 2 * H * H, H, one, T * B);
    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = reverse ? step : T - 1 - step;
      const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      s.t = t;
      s.g = const_cast<S*>(g) + t * B * GH;
      s.hp = hb + prev * B * H;
      s.hc = const_cast<S*>(hb) + cur * B * H;
      s.gy = gyb + t * gts;
      s.da = dab + t * B * GH;
      s.dh = dh.data_ptr<S>();
      s.dhn = dhn.data_ptr<S>();
      rows<ResetBeforeStep<S>>(bwd1, s, B, 2 * H);
      gemm_p<S>(pwn, false, B, H, H, s.da + 2 * H, GH, whh + 2 * H * H, H, false, s.tmp, H);
      rows<ResetBeforeStep<S>>(bwd2, s, B, 3 * H);
      gemm_p<S>(pw, false, B, H, 2 * H, s.da, GH, whh, H, true, s.dhn, H);
      std::swap(dh, dhn);
    }
  }
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

// ---- the ops

at::Tensor opt(const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// the team loops with the mask's code (m defined) or without it (separate instantiations)
template <typename Cell, typename S>
std::vector<at::Tensor> forward_cell(const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const at::Tensor& b_ih,
                                     const at::Tensor& b_hh, const at::Tensor& len, bool reverse,
                                     bool save, const at::Tensor& m) {
  if (m.defined())
    return forward_team<Cell, S, true>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse, save, m);
  return forward_team<Cell, S, false>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse, save, m);
}

template <typename Cell, typename S>
std::vector<at::Tensor> backward_cell(const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, bool has_b_ih, bool has_b_hh,
                                      const at::Tensor& len, bool reverse, const at::Tensor& hbuf,
                                      const at::Tensor& cbuf, const at::Tensor& gates,
                                      const at::Tensor& gy, const at::Tensor& ghn,
                                      const at::Tensor& gcn, const at::Tensor& m) {
  if (m.defined())
    return backward_team<Cell, S, true>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse, hbuf,
                                        cbuf, gates, gy, ghn, gcn, m);
  return backward_team<Cell, S, false>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse, hbuf,
                                       cbuf, gates, gy, ghn, gcn, m);
}

template <typename S>
std::vector<at::Tensor> forward_mode(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const at::Tensor& b_ih,
                                     const at::Tensor& b_hh, const at::Tensor& len, bool reverse,
                                     bool save, const at::Tensor& m) {
  switch (mode) {
    case RNN_TANH:
      return forward_cell<RnnCell<false>, S>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse,
                                             save, m);
    case RNN_RELU:
      return forward_cell<RnnCell<true>, S>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse,
                                            save, m);
    case LSTM:
      return forward_cell<LstmCell, S>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse, save, m);
    case GRU:
      return forward_cell<GruCell, S>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, len, reverse, save, m);
    default:
      return forward_reset_before<S>(x, h0, w_ih, w_hh, b_ih, b_hh, len, reverse, save);
  }
}

template <typename S>
std::vector<at::Tensor> backward_mode(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, bool has_b_ih, bool has_b_hh,
                                      const at::Tensor& len, bool reverse, const at::Tensor& hbuf,
                                      const at::Tensor& cbuf, const at::Tensor& gates,
                                      const at::Tensor& gy, const at::Tensor& ghn,
                                      const at::Tensor& gcn, const at::Tensor& m) {
  switch (mode) {
    case RNN_TANH:
      return backward_cell<RnnCell<false>, S>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse,
                                              hbuf, cbuf, gates, gy, ghn, gcn, m);
    case RNN_RELU:
      return backward_cell<RnnCell<true>, S>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse,
                                             hbuf, cbuf, gates, gy, ghn, gcn, m);
    case LSTM:
      return backward_cell<LstmCell, S>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse, hbuf,
                                        cbuf, gates, gy, ghn, gcn, m);
    case GRU:
      return backward_cell<GruCell, S>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse, hbuf,
                                       cbuf, gates, gy, ghn, gcn, m);
    default:
      return backward_reset_before<S>(x, w_ih, w_hh, has_b_ih, has_b_hh, len, reverse, hbuf,
                                      gates, gy, ghn);
  }
}

std::vector<at::Tensor> forward(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                const std::optional<at::Tensor>& b_hh,
                                const std::optional<at::Tensor>& lengths, bool reverse,
                                bool save) {
  check_forward(mode, x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh), opt(lengths));
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_forward", [&] {
    return forward_mode<scalar_t>(mode, x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh),
                                  opt(lengths), reverse, save, at::Tensor());
  });
}

// forward with recurrent dropout: the recurrent product reads h_prev ⊙ h_mask (B, H);
// the team-loop kinds only (rnn_tanh, rnn_relu, lstm, gru)
std::vector<at::Tensor> forward_masked(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                       const std::optional<at::Tensor>& c0,
                                       const at::Tensor& w_ih, const at::Tensor& w_hh,
                                       const std::optional<at::Tensor>& b_ih,
                                       const std::optional<at::Tensor>& b_hh,
                                       const std::optional<at::Tensor>& lengths, bool reverse,
                                       bool save, const at::Tensor& h_mask) {
  check_forward(mode, x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh), opt(lengths));
  check_h_mask("forward_masked", mode, h_mask, x, x.size(1), h0.size(1));
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_forward_masked", [&] {
    return forward_mode<scalar_t>(mode, x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh),
                                  opt(lengths), reverse, save, h_mask);
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
    return backward_mode<scalar_t>(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, opt(lengths),
                                   reverse, hbuf, cbuf, gates, gy, ghn, opt(gcn), at::Tensor());
  });
}

// backward of forward_masked (the same h_mask)
std::vector<at::Tensor> backward_masked(int64_t mode, const at::Tensor& x,
                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                        bool has_b_ih, bool has_b_hh,
                                        const std::optional<at::Tensor>& lengths, bool reverse,
                                        const at::Tensor& hbuf, const at::Tensor& cbuf,
                                        const at::Tensor& gates, const at::Tensor& gy,
                                        const at::Tensor& ghn,
                                        const std::optional<at::Tensor>& gcn,
                                        const at::Tensor& h_mask) {
  check_backward(mode, x, w_ih, w_hh, opt(lengths), hbuf, cbuf, gates, gy, ghn, opt(gcn));
  check_h_mask("backward_masked", mode, h_mask, x, x.size(1), hbuf.size(2));
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_backward_masked", [&] {
    return backward_mode<scalar_t>(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, opt(lengths),
                                   reverse, hbuf, cbuf, gates, gy, ghn, opt(gcn), h_mask);
  });
}

std::string isa() { return cpu_has_avx2() ? "avx2+fma" : "baseline"; }

}  // namespace

#include "layernorm_cells.h"  // LayerNorm LSTM/GRU: ops ln_forward, ln_backward
#include "proj_cells.h"  // LSTM with a projection (proj_size): ops proj_forward, proj_backward

TORCH_LIBRARY(seqlab_engine, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("forward_masked", &forward_masked);
  m.def("backward_masked", &backward_masked);
  m.def("isa", &isa);
}

#include "minimal.h"  // minGRU/minLSTM: fused sequential forward/backward (own op fragment)
