// Native time loops of the LayerNorm LSTM and LayerNorm GRU (seqlab/functional/layernorm.py
// holds the equations), forward and hand-derived BPTT, registered as
// torch.ops.seqlab_engine.{ln_forward, ln_backward}.
//
// Included once by recurrence.cpp at global scope, after its anonymous namespace (it reuses
// team.h's shards helpers and barrier, gemm.h's products, checks.h's argument checks and the
// States/output helpers there).
//
// A layer normalisation needs statistics over all G·H columns of a row, but each row's are its
// own. So the thread team usually splits the batch rows (ln_row_team): each thread runs the
// whole step on its rows, with all of W_hh, and the team meets only once per chunk of steps,
// around the shared input side. Where that does not pay (ln_row_team_size) the team splits
// each step by hidden units, as the classic loop does, in phases separated by the team's
// spinning barrier:
//   forward  A  own columns of h_prev W_hhᵀ (per-step GEMM), their partial mean/M2 per row
//            B  combine the partials (Chan's formula) -> x̂_hh; gates; (LSTM: c and its
//               partial moments over own units;  GRU: h, done)
//            C  (LSTM) combine -> ĉ, h = o ⊙ tanh(γ_c ĉ + β_c)
//   backward the mirror: each LN backward needs two row means (of dy⊙γ and dy⊙γ⊙x̂), summed
//            from per-shard partials after a barrier; the last phase writes dL/d(h W_hhᵀ)
//            and multiplies it by the shard's rows of W_hh (a partial dh_prev, summed by the
//            owners of the units next step, as in the classic loop).
// The input projection LN(x W_ihᵀ; γ_ih) is done for all steps before the loop (one GEMM, one
// parallel pass over rows), and its backward after the loop, with dx, dW_ih and dW_hh as
// single GEMMs over all T·B rows.

template <typename S>
struct LnFwd {
  int64_t H = 0, B = 0, n = 0, u0 = 0, t = 0, gs = 0;
  int64_t b0 = 0, b1 = 0;   // the batch rows [b0, b1) a kernel call handles
  int64_t bn = 0;           // the end of the caller's rows: the kernels prefetch row b + 1 < bn
  const int64_t* len = nullptr;
  const S* rec = nullptr;   // shard-local (B, G·n): h_prev W_hhᵀ of the shard's units
  const S* st = nullptr;    // this phase's combined statistics: mean [0, B), rstd [B, 2B)
  const S* xih = nullptr;   // x̂_ih of step t (B, G·H)
  const S* gih = nullptr;   // γ_ih, γ_hh (G·H)
  const S* ghh = nullptr;
  const S* bias = nullptr;  // bias added to the pre-activations (G·H)
  const S* bhn = nullptr;   // GRU: b_hn (H), inside r ⊙ (…)
  const S* gc = nullptr;    // LSTM: γ_c, β_c (H)
  const S* bc = nullptr;
  S* xhh = nullptr;         // out: x̂_hh of step t (B, G·H)
  S* g = nullptr;           // out: activated gates (B, gs)
  S* ch = nullptr;          // out (LSTM): ĉ (B, H)
  const S* hp = nullptr;
  S* hc = nullptr;
  const S* cp = nullptr;
  S* cc = nullptr;
  S* y = nullptr;           // masked output (lengths only) or null
  double* part = nullptr;   // out: this shard's partial moments (B, 2)
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

template <typename S>
struct LnBwd {
  int64_t H = 0, B = 0, n = 0, u0 = 0, t = 0, gs = 0, K = 0;
  int64_t b0 = 0, b1 = 0;   // the batch rows [b0, b1) a kernel call handles
  int64_t bn = 0;           // the end of the caller's rows: the kernels prefetch row b + 1 < bn
  const int64_t* len = nullptr;
  const S* st = nullptr;    // this phase's two combined means: [0, B), [B, 2B)
  const S* rs = nullptr;    // rstd of step t (B, K): [input, recurrent, cell]
  const S* g = nullptr;     // saved gates, x̂_hh, ĉ of step t; h_prev, c_prev
  const S* xhh = nullptr;
  const S* ch = nullptr;
  const S* hp = nullptr;
  const S* cp = nullptr;
  const S* gy = nullptr;    // dL/dy of step t, row stride gys (0: broadcast)
  int64_t gys = 0;
  const S* ghh = nullptr;
  const S* gc = nullptr;
  const S* bc = nullptr;
  const S* dsum = nullptr;  // dL/dh of step t from later steps (B, H)
  S* dhd = nullptr;         // out: direct part of dL/dh_prev (B, H)
  S* dc = nullptr;          // LSTM: dL/dc, in place
  S* du = nullptr;          // LSTM: dL/dĉ (B, H), between two phases
  S* da = nullptr;          // out: dL/da of step t (B, G·H), the input side
  S* drl = nullptr;         // shard-local (B, G·n): dy⊙γ_hh, then dL/d(h_prev W_hhᵀ)
  S* dr = nullptr;          // out: dL/d(h_prev W_hhᵀ) of step t (B, G·H)
  S* acc_ghh = nullptr;     // running dγ_hh, db_hh (G·H), dγ_c, dβ_c (H)
  S* acc_bhh = nullptr;
  S* acc_gc = nullptr;
  S* acc_bc = nullptr;
  double* part = nullptr;   // out: this shard's partial sums (B, 2)
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

namespace seqlab_base {
#include "ln_kernels.h"
}  // namespace seqlab_base

#ifdef SEQLAB_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace seqlab_avx2 {
#include "ln_kernels.h"
}  // namespace seqlab_avx2
#pragma GCC pop_options
// and an AVX-512 copy beside recurrence.cpp's one of kernels.h (same target, so it reuses that
// namespace's math); SEQLAB_ISA3 picks it by CPUID, as for the classic cells
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")
namespace seqlab_avx512 {
#include "ln_kernels.h"
}  // namespace seqlab_avx512
#pragma GCC pop_options
#endif

namespace {

enum LnMode : int64_t { LN_LSTM = 0, LN_GRU = 1 };
constexpr double kLnEps = 1e-5;  // seqlab.functional.layernorm.LN_EPS

inline const char* ln_mode_name(int64_t mode) { return mode == LN_LSTM ? "lnlstm" : "lngru"; }

template <typename S>
struct LnShard {
  int64_t u0 = 0, u1 = 0;
  at::Tensor w;    // W_hh rows of units [u0, u1), gate-major (G·n, H)
  at::Tensor loc;  // (B, G·n): fwd h_prev @ wᵀ; bwd dy⊙γ_hh, then dL/d(h_prev W_hhᵀ)
  at::Tensor stat;  // (2, B): this phase's combined statistics
  std::optional<PackedW<S>> pw;
  S* wp = nullptr;
  S* lp = nullptr;
  S* sp = nullptr;
};

template <typename S>
std::vector<LnShard<S>> ln_shards(const at::Tensor& w_hh, int64_t G, int64_t H, int64_t B,
                                  int64_t P, bool fwd, int64_t M) {  // M: rows per product
  const int64_t chunk = (H + P - 1) / P;
  const int64_t step = P == 1 ? H : (chunk + 7) / 8 * 8;
  std::vector<LnShard<S>> out;
  out.reserve(P);
  for (int64_t u0 = 0; u0 < H; u0 += step) {
    LnShard<S>& k = out.emplace_back();
    k.u0 = u0;
    k.u1 = std::min(H, u0 + step);
    const int64_t n = k.u1 - k.u0;
    k.w = unit_rows(w_hh, G, H, u0, n).contiguous();
    k.wp = static_cast<S*>(k.w.data_ptr());
    k.loc = at::empty({B, G * n}, w_hh.options());
    k.lp = static_cast<S*>(k.loc.data_ptr());
    k.stat = at::empty({2, B}, w_hh.options());
    k.sp = static_cast<S*>(k.stat.data_ptr());
    if (fwd)
      k.pw.emplace(true, M, G * n, H, k.wp, H);
    else
      k.pw.emplace(false, M, H, G * n, k.wp, H);
  }
  return out;
}

// body(k, step, phase) for every shard k, step and phase, the team meeting after each phase
template <typename F>
void ln_team(int64_t P, int64_t T, int64_t phases, const F& body) {
#ifdef _OPENMP
  if (P > 1) {
    team_region(P, [&](int tid, int nth, auto& sync, auto& guard) {
      for (int64_t step = 0; step < T; ++step)
        for (int64_t ph = 0; ph < phases; ++ph) {
          for (int64_t k = tid; k < P; k += nth) guard([&] { body(k, step, ph); });
          sync();
        }
    });
    return;
  }
#endif
  for (int64_t step = 0; step < T; ++step)
    for (int64_t ph = 0; ph < phases; ++ph)
      for (int64_t k = 0; k < P; ++k) body(k, step, ph);
}

// ---- the batch-row team: a layer normalisation is row-local, so splitting the batch rows
// (instead of the units) lets every thread run the one-shard loop on its rows [b0, b1), with
// all of W_hh and no meeting inside a step. The team meets only around the input side, which
// all threads share a chunk of steps at a time.

// When the units are split instead, every step costs three meetings (two in the GRU) and
// the phases between them are short; but each thread of the row team reads all of W_hh every
// step, which costs once W_hh outgrows a core's cache and the rows are few. Measured at 2
// threads, LN-LSTM train (T=100), rows vs units: rows win at C1-C4 (1.13 vs 1.58 of
// seqlab.LSTM at C1; C3, 64 rows per thread with a 4 MB W_hh: 399 vs 450 ms) and for B = 2-16
// at H = 48-256, except one row per thread with a 1 MB W_hh (B=2, H=256: 7.5 vs 6.8 ms); with
// W_hh of 2.4-16 MB units win up to 8 rows per thread (H=512, B=16: 97 vs 90 ms; H=384, B=16:
// 58 vs 53), tie at 16 and lose from 32 (H=512, B=64: 256 vs 272).
constexpr int64_t kLnRowWeightBytes = int64_t(512) << 10;

// Threads of the batch-row team, 1 when the step is split by units (or not at all).
// SEQLAB_LN_SPLIT=rows or =units forces the choice (tests and A/B runs).
inline int64_t ln_row_team_size(int64_t B, int64_t G, int64_t H, int64_t itemsize) {
  if (team_size(B, G, H) < 2) return 1;
  const char* v = std::getenv("SEQLAB_LN_SPLIT");
  const std::string force = v == nullptr ? "" : v;
  const int64_t most = std::min<int64_t>(at::get_num_threads(), B);
  if (force == "rows") return most;
  if (force == "units") return 1;
  const int64_t w = G * H * H * itemsize;  // rows per thread needed, by the size of W_hh
  const int64_t per = w <= kLnRowWeightBytes ? 1 : w <= 2 * kLnRowWeightBytes ? 2 : 32;
  const int64_t nt = std::min<int64_t>(most, B / per);
  return nt >= 2 ? nt : 1;
}

// Thread q's rows [rows[q], rows[q + 1]) of B, as even as they come.
inline std::vector<int64_t> ln_row_ranges(int64_t B, int64_t NT) {
  std::vector<int64_t> r(NT + 1);
  for (int64_t q = 0; q <= NT; ++q) r[q] = q * B / NT;
  return r;
}

// body(q, step) for every thread q of NT and step; at the steps where at_chunk(step) holds,
// chunk(q, step) runs first, with the team meeting after it (forward: the rows it writes are
// read next) or before it (backward: it reads every thread's rows of the steps before).
template <typename A, typename C, typename F>
void ln_row_team(int64_t NT, int64_t T, bool meet_before, const A& at_chunk, const C& chunk,
                 const F& body) {
#ifdef _OPENMP
  if (NT > 1) {
    team_region(NT, [&](int tid, int nth, auto& sync, auto& guard) {
      for (int64_t step = 0; step < T; ++step) {
        if (at_chunk(step)) {
          if (meet_before) sync();
          for (int64_t q = tid; q < NT; q += nth) guard([&] { chunk(q, step); });
          if (!meet_before) sync();
        }
        for (int64_t q = tid; q < NT; q += nth) guard([&] { body(q, step); });
      }
    });
    return;
  }
#endif
  for (int64_t step = 0; step < T; ++step) {
    for (int64_t q = 0; q < NT && at_chunk(step); ++q) chunk(q, step);
    for (int64_t q = 0; q < NT; ++q) body(q, step);
  }
}

// Chan et al.'s pairwise combination of the shards' (mean, M2) over cnt[q] columns each:
// the row's mean and rstd = 1/√(M2/N + ε), into st[b] and st[B + b]
template <typename S>
void ln_combine_moments(const double* part, int64_t P, int64_t B, const int64_t* cnt, S* st,
                        int64_t b0 = 0, int64_t b1 = -1) {
  for (int64_t b = b0; b < (b1 < 0 ? B : b1); ++b) {
    double n = 0.0, m = 0.0, m2 = 0.0;
    for (int64_t q = 0; q < P; ++q) {
      const double* pq = part + (q * B + b) * 2;
      const double nb = static_cast<double>(cnt[q]), d = pq[0] - m, nt = n + nb;
      m += d * nb / nt;
      m2 += pq[1] + d * d * n * nb / nt;
      n = nt;
    }
    st[b] = static_cast<S>(m);
    st[B + b] = static_cast<S>(1.0 / std::sqrt(m2 / n + kLnEps));
  }
}

// the shards' partial sums added up, divided by N: st[b], st[B + b]
template <typename S>
void ln_combine_sums(const double* part, int64_t P, int64_t B, int64_t N, S* st,
                     int64_t b0 = 0, int64_t b1 = -1) {
  for (int64_t b = b0; b < (b1 < 0 ? B : b1); ++b) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t q = 0; q < P; ++q) {
      s1 += part[(q * B + b) * 2];
      s2 += part[(q * B + b) * 2 + 1];
    }
    st[b] = static_cast<S>(s1 / static_cast<double>(N));
    st[B + b] = static_cast<S>(s2 / static_cast<double>(N));
  }
}

// Per-thread buffers reused across calls (as recurrence.cpp's `scratch`, own slots): the
// backward's dA / dL/d(h W_hhᵀ) of all steps and the no-grad forward's x̂_ih are never
// returned, and fresh multi-megabyte buffers cost their page faults on every call (measured:
// ~15 % of an LN-LSTM backward at C1).
enum LnSlot { LN_DA = 0, LN_DR = 1, LN_XIH = 2, kLnSlots = 3 };

inline at::Tensor ln_scratch(LnSlot slot, at::IntArrayRef shape, const at::TensorOptions& opts) {
  thread_local at::Tensor cache[kLnSlots];
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel * static_cast<int64_t>(opts.dtype().itemsize()) > kScratchMaxBytes)
    return at::empty(shape, opts);
  at::Tensor& t = cache[slot];
  if (!t.defined() || t.storage().use_count() > 1 || t.numel() < numel ||
      t.dtype() != opts.dtype())
    t = at::empty({numel}, opts);
  return t.narrow(0, 0, numel).view(shape);
}

// Rows per block of the work before and after the loop (input projection and its LN, their
// backward and the weight-gradient products): about 1 MB of G·H-wide rows, at least 64.
inline int64_t ln_chunk_rows(int64_t GH, size_t itemsize) {
  return std::max<int64_t>(64, (int64_t(1) << 20) / std::max<int64_t>(1, GH * itemsize));
}

// Pull columns [0, n) of `blocks` blocks (`bs` apart) of B rows (`row` apart) towards the cache,
// for reading (rw 0) or writing (rw 1), while the step's GEMM runs: the rows of the big per-step
// buffers (x̂_ih, the saved x̂_hh, gates, ĉ, c; dA and dr) are cold and would stall the LN
// passes, which touch ~2x the classic cell's bytes per step.
template <int RW, typename S>
inline void ln_prefetch(const S* p, int64_t B, int64_t row, int64_t blocks, int64_t bs,
                        int64_t n) {
  constexpr int64_t line = 64 / sizeof(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t q = 0; q < blocks; ++q) {
      const S* r = p + b * row + q * bs;
      for (int64_t j = 0; j < n; j += line) __builtin_prefetch(r + j, RW, 3);
    }
}

inline at::Tensor or_zeros(const at::Tensor& t, int64_t n, const at::TensorOptions& opts) {
  return t.defined() ? t : at::zeros({n}, opts);
}

// ---- forward: (y, h_n, c_n, hbuf, cbuf, gates, xih, xhh, ch, rs); the last six only with save
//   gates (T, B, 4H): LSTM [i f g o], GRU [r z n hw_n];  xih, xhh (T, B, G·H): x̂ of the input
//   and recurrent projections;  ch (T, B, H): ĉ (LSTM);  rs (T, B, K): their rstd per row
template <typename S, bool LSTMC>
std::vector<at::Tensor> ln_forward_impl(const at::Tensor& x, const at::Tensor& h0,
                                        const at::Tensor& c0, const at::Tensor& w_ih,
                                        const at::Tensor& w_hh, const at::Tensor& b_ih,
                                        const at::Tensor& b_hh, const at::Tensor& g_ih,
                                        const at::Tensor& g_hh, const at::Tensor& g_c,
                                        const at::Tensor& b_c, const at::Tensor& len,
                                        bool reverse, bool save, const at::Tensor& hmask) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  constexpr int64_t G = LSTMC ? 4 : 3, K = LSTMC ? 3 : 2;
  const int64_t GH = G * H, gs = 4 * H, Ts = save ? T : 1;
  auto opts = x.options();
  States sb = make_states(x, h0, c0, LSTMC, len, reverse, save);
  at::Tensor xih = save ? pooled({T, B, GH}, opts) : ln_scratch(LN_XIH, {T, B, GH}, opts);
  at::Tensor rs = at::empty({T, B, K}, opts);
  at::Tensor gates = pooled({Ts, B, gs}, opts), xhh = pooled({Ts, B, GH}, opts);
  at::Tensor ch = pooled({LSTMC ? Ts : 0, B, H}, opts);
  auto outputs = [&]() -> std::vector<at::Tensor> {
    std::vector<at::Tensor> out = forward_outputs(sb, gates, LSTMC, true, reverse, save);
    at::Tensor empty = at::empty({0}, opts);
    out.push_back(save ? xih : empty);
    out.push_back(save ? xhh : empty);
    out.push_back(save && LSTMC ? ch : empty);
    out.push_back(save ? rs : empty);
    return out;
  };
  if (T == 0 || B == 0 || H == 0) return outputs();
  S* xip = xih.data_ptr<S>();
  S* rsp = rs.data_ptr<S>();
  const auto rows_fn = SEQLAB_ISA3(ln_rows<S>);
  at::Tensor bias = LSTMC ? sum_bias(b_ih, b_hh) : GruCell::fold_bias(b_ih, b_hh, H);
  bias = or_zeros(bias, GH, opts).contiguous();
  at::Tensor bhn = LSTMC ? at::Tensor() : GruCell::recurrent_bias(b_hh, H, opts);
  at::Tensor gc = LSTMC ? g_c : at::Tensor(), bc = LSTMC ? or_zeros(b_c, H, opts) : at::Tensor();

  LnFwd<S> s;
  s.H = H;
  s.B = B;
  s.b1 = B;
  s.bn = B;
  s.gs = gs;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.gih = g_ih.data_ptr<S>();
  s.ghh = g_hh.data_ptr<S>();
  s.bias = bias.data_ptr<S>();
  s.bhn = bhn.defined() ? bhn.data_ptr<S>() : nullptr;
  s.gc = gc.defined() ? gc.data_ptr<S>() : nullptr;
  s.bc = bc.defined() ? bc.data_ptr<S>() : nullptr;
  S* hb = sb.hbuf.data_ptr<S>();
  S* cb = LSTMC ? sb.cbuf.data_ptr<S>() : nullptr;
  S* yb = len.defined() ? sb.y.data_ptr<S>() : nullptr;
  S* gp = gates.data_ptr<S>();
  S* xhp = xhh.data_ptr<S>();
  S* chp = LSTMC ? ch.data_ptr<S>() : nullptr;

  // recurrent dropout: the product reads hm = h_prev ⊙ m, kept in two parity buffers; each
  // shard writes its units of the next step's hm once its h is done (the team meets after)
  const bool masked = hmask.defined();
  at::Tensor hmbuf = masked ? at::empty({2, B, H}, opts) : at::Tensor();
  if (masked) hmbuf[0].copy_(h0.mul(hmask));  // hm of step 0 (parity 0)
  S* hmb = masked ? hmbuf.data_ptr<S>() : nullptr;
  const S* mk = masked ? hmask.data_ptr<S>() : nullptr;
  auto next_hm = [&](int64_t step, const S* hc, int64_t u0, int64_t u1, int64_t b0, int64_t b1) {
    if (!masked || step + 1 >= T) return;
    S* out = hmb + ((step + 1) & 1) * B * H;
    for (int64_t b = b0; b < b1; ++b) {
      const S* __restrict h = hc + b * H;
      const S* __restrict m = mk + b * H;
      S* __restrict d = out + b * H;
      for (int64_t j = u0; j < u1; ++j) d[j] = h[j] * m[j];
    }
  };

  // NT > 1: the batch-row team (one shard, all units); else shards of units (P > 1) or one
  const int64_t NT = ln_row_team_size(B, G, H, sizeof(S));
  const std::vector<int64_t> rows = ln_row_ranges(B, NT);
  const int64_t P0 = NT > 1 ? 1 : team_size(B, G, H);
  std::vector<LnShard<S>> shards = ln_shards<S>(w_hh, G, H, B, P0, true, rows[1]);
  const int64_t P = static_cast<int64_t>(shards.size()), shares = NT > 1 ? NT : P;
  std::vector<int64_t> cnt_rec(P), cnt_c(P);
  for (int64_t q = 0; q < P; ++q) {
    cnt_c[q] = shards[q].u1 - shards[q].u0;
    cnt_rec[q] = G * cnt_c[q];
  }
  // the shards' partial moments per phase that writes them: (2, P, B, 2)
  std::vector<double> parts(static_cast<size_t>(2 * P * B * 2));
  double* pp = parts.data();
  const auto gates_fn = LSTMC ? SEQLAB_ISA3(lnlstm_fwd_gates<S>) : SEQLAB_ISA3(lngru_fwd<S>);
  const auto out_fn = SEQLAB_ISA3(lnlstm_fwd_out<S>);
  const auto moments_fn = SEQLAB_ISA(ln_part_moments<S>);
  std::optional<BlasThreads> loop_threads;
  if (P == 1 && NT == 1) loop_threads.emplace(B * G * H * H);

  // The input side x̂_ih = LN(x W_ihᵀ) runs a chunk of Tc steps (~1 MB of G·H-wide rows) at a
  // time inside the loop, so the steps read it from cache: at the chunk's first step each
  // share (a shard, or a thread of the row team) projects and normalises its part of the
  // chunk's rows, and the team meets before they are read.
  const int64_t Tc = std::max<int64_t>(1, ln_chunk_rows(GH, sizeof(S)) / B);
  const S* xp = x.data_ptr<S>();
  const S* wip = w_ih.data_ptr<S>();
  auto input_side = [&](int64_t q, int64_t c0, int64_t L) {  // steps [c0, c0 + L), share q
    const int64_t t_lo = reverse ? T - c0 - L : c0, R = L * B, per = (R + shares - 1) / shares;
    const int64_t r0 = t_lo * B + std::min(R, q * per), r1 = t_lo * B + std::min(R, (q + 1) * per);
    if (r0 >= r1) return;
    gemm<S>(true, r1 - r0, GH, I, xp + r0 * I, I, wip, I, false, xip + r0 * GH, GH);
    rows_fn(xip, r0, r1, GH, rsp, K, kLnEps);
  };
  // shard q's view of step `step`
  auto step_view = [&](int64_t q, int64_t step) {
    const LnShard<S>& sh = shards[q];
    const int64_t t = reverse ? T - 1 - step : step;
    const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
    const int64_t ts = save ? t : 0;
    LnFwd<S> st = s;
    st.n = sh.u1 - sh.u0;
    st.u0 = sh.u0;
    st.t = t;
    st.rec = sh.lp;
    st.st = sh.sp;
    st.xih = xip + t * B * GH;
    st.xhh = xhp + ts * B * GH;
    st.g = gp + ts * B * gs;
    st.ch = chp ? chp + ts * B * H : nullptr;
    st.hp = hb + prev * B * H;
    st.hc = hb + cur * B * H;
    if (cb) {
      st.cp = cb + prev * B * H;
      st.cc = cb + cur * B * H;
    }
    st.y = yb ? yb + t * B * H : nullptr;
    return st;
  };

  if (P == 1) {  // one shard: each thread's batch rows through all phases of a step at once
    LnShard<S>& sh = shards[0];
    ln_row_team(
        NT, T, false, [&](int64_t step) { return step % Tc == 0; },
        [&](int64_t q, int64_t step) { input_side(q, step, std::min(Tc, T - step)); },
        [&](int64_t q, int64_t step) {
          const int64_t b0 = rows[q], b1 = rows[q + 1];
          LnFwd<S> st = step_view(0, step);
          st.bn = b1;
          S* rst = rsp + st.t * B * K;
          // the first row's cold rows (the kernels pull each next row themselves)
          ln_prefetch<0>(st.xih + b0 * GH, 1, GH, 1, 0, GH);
          ln_prefetch<1>(st.xhh + b0 * GH, 1, GH, 1, 0, GH);
          ln_prefetch<1>(st.g + b0 * gs, 1, gs, 1, 0, gs);
          const S* hr = masked ? hmb + (step & 1) * B * H : st.hp;  // what W_hh multiplies
          gemm_p<S>(*sh.pw, true, b1 - b0, GH, H, hr + b0 * H, H, sh.wp, H, false,
                    sh.lp + b0 * GH, GH);
          for (int64_t b = b0; b < b1; ++b) {
            moments_fn(sh.lp + b * GH, 1, GH, pp + b * 2);
            ln_combine_moments<S>(pp, 1, B, cnt_rec.data(), sh.sp, b, b + 1);
            rst[b * K + 1] = sh.sp[B + b];
            st.b0 = b;
            st.b1 = b + 1;
            st.part = pp + B * 2;
            gates_fn(st);
            if (LSTMC) {
              ln_combine_moments<S>(pp + B * 2, 1, B, cnt_c.data(), sh.sp, b, b + 1);
              rst[b * K + 2] = sh.sp[B + b];
              out_fn(st);
            }
          }
          next_hm(step, st.hc, 0, H, b0, b1);
        });
    return outputs();
  }

  ln_team(P, T, LSTMC ? 3 : 2, [&](int64_t q, int64_t step, int64_t phase) {
    const LnShard<S>& sh = shards[q];
    const int64_t n = sh.u1 - sh.u0, GN = G * n;
    LnFwd<S> st = step_view(q, step);
    S* rst = rsp + st.t * B * K;
    if (phase == 0) {  // own columns of h_prev W_hhᵀ and their moments
      if (step % Tc == 0) input_side(q, step, std::min(Tc, T - step));
      // the first row's cold rows of phase 1 (its kernel pulls each next row itself)
      ln_prefetch<0>(st.xih + sh.u0, 1, GH, G, H, n);
      ln_prefetch<1>(st.xhh + sh.u0, 1, GH, G, H, n);
      ln_prefetch<1>(st.g + sh.u0, 1, gs, 4, H, n);
      const S* hr = masked ? hmb + (step & 1) * B * H : st.hp;  // what W_hh multiplies
      gemm_p<S>(*sh.pw, true, B, GN, H, hr, H, sh.wp, H, false, sh.lp, GN);
      moments_fn(sh.lp, B, GN, pp + q * B * 2);
    } else if (phase == 1) {  // x̂_hh, gates (LSTM: c and its moments; GRU: h)
      ln_combine_moments<S>(pp, P, B, cnt_rec.data(), sh.sp);
      if (q == 0)
        for (int64_t b = 0; b < B; ++b) rst[b * K + 1] = sh.sp[B + b];
      st.part = pp + (P + q) * B * 2;
      gates_fn(st);
      if (!LSTMC) next_hm(step, st.hc, sh.u0, sh.u1, 0, B);
    } else {  // LSTM: ĉ and h
      ln_combine_moments<S>(pp + P * B * 2, P, B, cnt_c.data(), sh.sp);
      if (q == 0)
        for (int64_t b = 0; b < B; ++b) rst[b * K + 2] = sh.sp[B + b];
      out_fn(st);
      next_hm(step, st.hc, sh.u0, sh.u1, 0, B);
    }
  });
  return outputs();
}

// ---- backward: (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, dg_c, db_c)
template <typename S, bool LSTMC>
std::vector<at::Tensor> ln_backward_impl(
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& g_ih,
    const at::Tensor& g_hh, const at::Tensor& g_c, const at::Tensor& b_c, bool has_b_ih,
    bool has_b_hh, bool has_b_c, const at::Tensor& len, bool reverse, const at::Tensor& hbuf,
    const at::Tensor& cbuf, const at::Tensor& gates, const at::Tensor& xih,
    const at::Tensor& xhh, const at::Tensor& ch, const at::Tensor& rs, const at::Tensor& gy,
    const at::Tensor& ghn, const at::Tensor& gcn, const at::Tensor& hmask) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = hbuf.size(2);
  constexpr int64_t G = LSTMC ? 4 : 3, K = LSTMC ? 3 : 2;
  const int64_t GH = G * H, gs = 4 * H, R = T * B;
  auto opts = x.options();
  at::Tensor empty = at::empty({0}, opts);
  at::Tensor dc = LSTMC ? gcn.clone() : empty;
  if (T == 0 || B == 0 || H == 0) {
    auto z = [&](int64_t n, bool has) { return has ? at::zeros({n}, opts) : empty; };
    return {at::zeros({T, B, I}, opts), ghn.clone(), dc, at::zeros({GH, I}, opts),
            at::zeros({GH, H}, opts), z(GH, has_b_ih), z(GH, has_b_hh), at::zeros({GH}, opts),
            at::zeros({GH}, opts), LSTMC ? at::zeros({H}, opts) : empty,
            z(H, LSTMC && has_b_c)};
  }
  at::Tensor da = ln_scratch(LN_DA, {T, B, GH}, opts), dr = ln_scratch(LN_DR, {T, B, GH}, opts);
  at::Tensor dsum = ghn.clone(), dhd = at::zeros({B, H}, opts);
  at::Tensor du = LSTMC ? at::empty({B, H}, opts) : empty;
  // NT > 1: the batch-row team (one shard, all units); else shards of units (P > 1) or one
  const int64_t NT = ln_row_team_size(B, G, H, sizeof(S));
  const std::vector<int64_t> rows = ln_row_ranges(B, NT);
  // dγ_hh, db_hh, dγ_c, dβ_c: one row per thread of the row team (they share all units)
  const int64_t nacc = 2 * GH + 2 * H;
  at::Tensor acc = at::zeros({NT, nacc}, opts);
  at::Tensor bc = LSTMC ? or_zeros(b_c, H, opts) : at::Tensor();
  int64_t gts = 0;
  LnBwd<S> s;
  s.H = H;
  s.B = B;
  s.b1 = B;
  s.bn = B;
  s.gs = gs;
  s.K = K;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  at::Tensor gyc = output_grad(gy, B, H, gts, s.gys);
  const S* gyb = gyc.data_ptr<S>();
  s.ghh = g_hh.data_ptr<S>();
  s.gc = LSTMC ? g_c.data_ptr<S>() : nullptr;
  s.bc = LSTMC ? bc.data_ptr<S>() : nullptr;
  s.dsum = dsum.data_ptr<S>();
  s.dhd = dhd.data_ptr<S>();
  s.dc = LSTMC ? dc.data_ptr<S>() : nullptr;
  s.du = LSTMC ? du.data_ptr<S>() : nullptr;
  S* accp = acc.data_ptr<S>();
  const S* hb = hbuf.data_ptr<S>();
  const S* cb = LSTMC ? cbuf.data_ptr<S>() : nullptr;
  const S* gp = gates.data_ptr<S>();
  const S* xhp = xhh.data_ptr<S>();
  const S* chp = LSTMC ? ch.data_ptr<S>() : nullptr;
  const S* rsp = rs.data_ptr<S>();
  S* dap = da.data_ptr<S>();
  S* drp = dr.data_ptr<S>();
  S* dsp = dsum.data_ptr<S>();
  const S* dhdp = dhd.data_ptr<S>();

  const int64_t P0 = NT > 1 ? 1 : team_size(B, G, H);
  std::vector<LnShard<S>> shards = ln_shards<S>(w_hh, G, H, B, P0, false, rows[1]);
  const int64_t P = static_cast<int64_t>(shards.size()), shares = NT > 1 ? NT : P;
  at::Tensor dpart = at::empty({P, B, H}, opts);  // each shard's share of dh_prev
  S* dpp = dpart.data_ptr<S>();
  std::vector<double> parts(static_cast<size_t>(2 * P * B * 2));
  double* pp = parts.data();
  const auto first_fn = LSTMC ? SEQLAB_ISA3(lnlstm_bwd_cell<S>) : SEQLAB_ISA3(lngru_bwd_gates<S>);
  const auto gates_fn = SEQLAB_ISA3(lnlstm_bwd_gates<S>);
  const auto rec_fn = SEQLAB_ISA3(ln_bwd_rec<S>);
  const int64_t last = LSTMC ? 2 : 1;
  // The input side, LN(x W_ihᵀ; γ_ih) + b_ih's backward and its products, runs a chunk of Tc
  // steps (~1 MB of G·H-wide rows) at a time inside the loop, while the chunk's dA and dr rows
  // are still in cache: at the first phase of the step after the chunk (the team has met, so
  // every shard's rows are written) each shard takes its share of the chunk's rows: the LN
  // backward (its own sums of dA⊙x̂_ih and dA: dγ_ih, db_ih), its rows of dx = dP W_ih and its
  // part of dW_ih += dPᵀ x and dW_hh += drᵀ h_prev (own accumulators, summed after the loop).
  const int64_t Tc = std::max<int64_t>(1, ln_chunk_rows(GH, sizeof(S)) / B);
  at::Tensor sums = at::zeros({shares, 2, GH}, opts);
  at::Tensor dx = at::empty({T, B, I}, opts);
  at::Tensor dw_ih = at::zeros({shares, GH, I}, opts), dw_hh = at::zeros({shares, GH, H}, opts);
  const auto bwd_rows = SEQLAB_ISA3(ln_bwd_rows<S>);
  const S* gip = g_ih.data_ptr<S>();
  const S* xip = xih.data_ptr<S>();
  const S* xp = x.data_ptr<S>();
  const S* wip = w_ih.data_ptr<S>();
  const S* hpp = hb + (reverse ? B * H : 0);  // h_prev of row r (time-major) at hpp + r·H
  S* smp = sums.data_ptr<S>();
  S* dxp = dx.data_ptr<S>();
  S* dwip = dw_ih.data_ptr<S>();
  S* dwhp = dw_hh.data_ptr<S>();
  // recurrent dropout: the recurrent path's dh_prev is (Σ partials) ⊙ m, and dW_hh reads
  // h_prev ⊙ m (formed per share of a chunk in the shard's own rows of hmt)
  const bool masked = hmask.defined();
  const S* mk = masked ? hmask.data_ptr<S>() : nullptr;
  const int64_t hm_rows = (Tc * B + shares - 1) / shares;
  at::Tensor hmt = masked ? at::empty({shares, hm_rows, H}, opts) : at::Tensor();
  S* hmtp = masked ? hmt.data_ptr<S>() : nullptr;
  auto input_side = [&](int64_t q, int64_t c0, int64_t L) {  // steps [c0, c0 + L), share q
    const int64_t t_lo = reverse ? c0 : T - c0 - L, R = L * B, per = (R + shares - 1) / shares;
    const int64_t r0 = t_lo * B + std::min(R, q * per), r1 = t_lo * B + std::min(R, (q + 1) * per);
    if (r0 >= r1) return;
    const int64_t M = r1 - r0;
    bwd_rows(dap, xip, gip, rsp, K, r0, r1, GH, smp + q * 2 * GH);
    gemm<S>(false, M, I, GH, dap + r0 * GH, GH, wip, I, false, dxp + r0 * I, I);
    gemm_ta<S>(GH, I, M, dap + r0 * GH, GH, xp + r0 * I, I, true, dwip + q * GH * I, I);
    const S* hsrc = hpp + r0 * H;
    if (masked) {  // this share's rows of h_prev ⊙ m (row r is batch row r mod B)
      S* hm = hmtp + q * hm_rows * H;
      for (int64_t r = r0; r < r1; ++r) {
        const S* __restrict h = hpp + r * H;
        const S* __restrict m = mk + (r % B) * H;
        S* __restrict d = hm + (r - r0) * H;
        for (int64_t j = 0; j < H; ++j) d[j] = h[j] * m[j];
      }
      hsrc = hm;
    }
    gemm_ta<S>(GH, H, M, drp + r0 * GH, GH, hsrc, H, true, dwhp + q * GH * H, H);
  };
  std::optional<BlasThreads> loop_threads;
  if (P == 1 && NT == 1) loop_threads.emplace(B * G * H * H);

  // shard q's view of step `step`, with thread a's accumulators (row team; else a = 0)
  auto step_view = [&](int64_t q, int64_t step, int64_t a) {
    const LnShard<S>& sh = shards[q];
    const int64_t t = reverse ? step : T - 1 - step;
    const int64_t prev = reverse ? t + 1 : t;
    LnBwd<S> st = s;
    st.n = sh.u1 - sh.u0;
    st.u0 = sh.u0;
    st.t = t;
    st.st = sh.sp;
    st.rs = rsp + t * B * K;
    st.g = gp + t * B * gs;
    st.xhh = xhp + t * B * GH;
    st.ch = chp ? chp + t * B * H : nullptr;
    st.hp = hb + prev * B * H;
    st.cp = cb ? cb + prev * B * H : nullptr;
    st.gy = gyb + t * gts;
    st.da = dap + t * B * GH;
    st.dr = drp + t * B * GH;
    st.drl = P == 1 ? st.dr : sh.lp;  // one shard: its local rows are the global ones
    st.acc_ghh = accp + a * nacc;
    st.acc_bhh = st.acc_ghh + GH;
    st.acc_gc = st.acc_ghh + 2 * GH;
    st.acc_bc = st.acc_ghh + 2 * GH + H;
    return st;
  };
  // shard q's share of dh_prev for rows [b0, b1), prefetching the next step's row b0 meanwhile
  auto rec_gemm = [&](const LnBwd<S>& st, int64_t q, int64_t step, int64_t b0, int64_t b1) {
    const LnShard<S>& sh = shards[q];
    const int64_t n = sh.u1 - sh.u0, GN = G * n, t = st.t, u = sh.u0 + b0 * H;
    if (step + 1 < T) {
      const int64_t tn = reverse ? t + 1 : t - 1, pn = reverse ? tn + 1 : tn;
      ln_prefetch<0>(gp + tn * B * gs + b0 * gs + sh.u0, 1, gs, 4, H, n);
      ln_prefetch<0>(xhp + tn * B * GH + b0 * GH + sh.u0, 1, GH, G, H, n);
      if (LSTMC) {
        ln_prefetch<0>(chp + tn * B * H + u, 1, H, 1, 0, n);
        ln_prefetch<0>(cb + pn * B * H + u, 1, H, 1, 0, n);
      } else {
        ln_prefetch<0>(hb + pn * B * H + u, 1, H, 1, 0, n);
      }
      ln_prefetch<1>(dap + tn * B * GH + b0 * GH + sh.u0, 1, GH, G, H, n);
    }
    gemm_p<S>(*sh.pw, false, b1 - b0, H, GN, st.drl + b0 * GN, GN, sh.wp, H, false,
              dpp + (q * B + b0) * H, H);
  };
  // units [u0, u0+n) of rows [b0, b1) of dh = direct part + every shard's partial
  auto gather_dh = [&](int64_t u0, int64_t n, int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      S* __restrict out = dsp + b * H + u0;
      const S* __restrict d = dhdp + b * H + u0;
      for (int64_t j = 0; j < n; ++j) out[j] = masked ? S(0) : d[j];
      for (int64_t r = 0; r < P; ++r) {
        const S* __restrict pr = dpp + (r * B + b) * H + u0;
        for (int64_t j = 0; j < n; ++j) out[j] += pr[j];
      }
      if (masked) {  // the partials sum (dA W_hh), which the mask scales
        const S* __restrict m = mk + b * H + u0;
        for (int64_t j = 0; j < n; ++j) out[j] = d[j] + out[j] * m[j];
      }
    }
  };

  if (P == 1) {  // one shard: each thread's batch rows through all phases of a step at once
    const LnShard<S>& sh = shards[0];
    ln_row_team(
        NT, T, true, [&](int64_t step) { return step > 0 && step % Tc == 0; },
        [&](int64_t q, int64_t step) { input_side(q, step - Tc, Tc); },
        [&](int64_t q, int64_t step) {
          const int64_t b0 = rows[q], b1 = rows[q + 1];
          LnBwd<S> st = step_view(0, step, q);
          st.bn = b1;
          if (step > 0) gather_dh(0, H, b0, b1);
          for (int64_t b = b0; b < b1; ++b) {
            st.b0 = b;
            st.b1 = b + 1;
            st.part = pp;
            first_fn(st);
            if (LSTMC) {
              ln_combine_sums<S>(pp, 1, B, H, sh.sp, b, b + 1);
              st.part = pp + B * 2;
              gates_fn(st);
            }
            ln_combine_sums<S>(pp + (LSTMC ? B * 2 : 0), 1, B, GH, sh.sp, b, b + 1);
            rec_fn(st, G);
          }
          rec_gemm(st, 0, step, b0, b1);
        });
  } else {
    ln_team(P, T, last + 1, [&](int64_t q, int64_t step, int64_t phase) {
      const LnShard<S>& sh = shards[q];
      LnBwd<S> st = step_view(q, step, 0);
      if (phase == 0) {
        if (step > 0 && step % Tc == 0) input_side(q, step - Tc, Tc);
        if (step > 0) gather_dh(sh.u0, sh.u1 - sh.u0, 0, B);
        st.part = pp + q * B * 2;
        first_fn(st);
      } else if (phase < last) {  // LSTM: the cell LN's backward, the gates' dA
        ln_combine_sums<S>(pp, P, B, H, sh.sp);
        st.part = pp + (P + q) * B * 2;
        gates_fn(st);
      } else {  // the recurrent LN's backward, then this shard's share of dh_prev
        ln_combine_sums<S>(pp + (LSTMC ? P * B * 2 : 0), P, B, GH, sh.sp);
        rec_fn(st, G);
        rec_gemm(st, q, step, 0, B);
      }
    });
  }
  loop_threads.reset();
  at::Tensor dh0 = dhd.add(masked ? dpart.sum(0).mul_(hmask) : dpart.sum(0));
  {  // the last chunk (one share per shard, as in the loop)
    const int64_t c0 = (T - 1) / Tc * Tc;
    at::parallel_for(0, shares, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) input_side(q, c0, T - c0);
    });
  }
  if (shares > 1) {
    dw_ih = dw_ih.sum(0);
    dw_hh = dw_hh.sum(0);
  } else {
    dw_ih = dw_ih[0];
    dw_hh = dw_hh[0];
  }
  at::Tensor sum2 = sums.sum(0);
  at::Tensor dg_ih = sum2[0], db_ih = has_b_ih ? sum2[1] : empty;  // views of sum2
  acc = acc.size(0) > 1 ? acc.sum(0) : acc[0];
  at::Tensor dg_hh = acc.narrow(0, 0, GH).clone();
  // LSTM: d(LN_hh output) = dA, so db_hh = Σ dA = db_ih (not accumulated in the loop)
  at::Tensor db_hh = !has_b_hh ? empty : LSTMC ? sum2[1].clone() : acc.narrow(0, GH, GH).clone();
  at::Tensor dg_c = LSTMC ? acc.narrow(0, 2 * GH, H).clone() : empty;
  at::Tensor db_c = LSTMC && has_b_c ? acc.narrow(0, 2 * GH + H, H).clone() : empty;
  return {dx, dh0, dc, dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, dg_c, db_c};
}

// ---- argument checks (the ops are reachable directly; see checks.h)

inline void check_ln_mode(const char* op, int64_t mode) {
  TORCH_CHECK(mode == LN_LSTM || mode == LN_GRU, op, ": mode: expected 0 (lnlstm) or 1 (lngru), got ",
              mode);
}

inline std::string ln_why(int64_t mode, const char* shape) {
  return std::string(shape) + " with G = " + (mode == LN_LSTM ? "4" : "3") + " for mode " +
         ln_mode_name(mode);
}

inline void check_ln_params(const char* op, int64_t mode, const at::Tensor& x, int64_t H,
                            const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const at::Tensor& g_ih, const at::Tensor& g_hh,
                            const at::Tensor& g_c, const at::Tensor& b_c) {
  const int64_t G = mode == LN_LSTM ? 4 : 3, I = x.size(2);
  check_like(op, "w_ih", w_ih, {G * H, I}, x, ln_why(mode, "(G·H, I)"));
  check_like(op, "w_hh", w_hh, {G * H, H}, x, ln_why(mode, "(G·H, H)"));
  check_like(op, "g_ih", g_ih, {G * H}, x, ln_why(mode, "(G·H,)"));
  check_like(op, "g_hh", g_hh, {G * H}, x, ln_why(mode, "(G·H,)"));
  if (mode == LN_LSTM) {
    check_like(op, "g_c", g_c, {H}, x, "(H,) for mode lnlstm");
    if (b_c.defined()) check_like(op, "b_c", b_c, {H}, x, "(H,) for mode lnlstm");
  }
}

inline void check_ln_forward(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                             const at::Tensor& c0, const at::Tensor& w_ih,
                             const at::Tensor& w_hh, const at::Tensor& b_ih,
                             const at::Tensor& b_hh, const at::Tensor& g_ih,
                             const at::Tensor& g_hh, const at::Tensor& g_c,
                             const at::Tensor& b_c, const at::Tensor& len) {
  const char* op = "seqlab_engine.ln_forward";
  check_ln_mode(op, mode);
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1);
  TORCH_CHECK(h0.defined() && h0.dim() == 2 && h0.size(0) == B, op,
              ": h0: expected shape (B, H) with B = ", B, " (from x), got ",
              h0.defined() ? shape_str(h0.sizes()) : std::string("None"));
  const int64_t H = h0.size(1), GH = (mode == LN_LSTM ? 4 : 3) * H;
  check_like(op, "h0", h0, {B, H}, x, "(B, H)");
  if (mode == LN_LSTM)
    check_like(op, "c0", c0, {B, H}, x, "(B, H) like h0 (mode lnlstm has a cell state)");
  check_ln_params(op, mode, x, H, w_ih, w_hh, g_ih, g_hh, g_c, b_c);
  if (b_ih.defined()) check_like(op, "b_ih", b_ih, {GH}, x, ln_why(mode, "(G·H,)"));
  if (b_hh.defined()) check_like(op, "b_hh", b_hh, {GH}, x, ln_why(mode, "(G·H,)"));
  check_lengths(op, len, T, B);
}

inline void check_ln_backward(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                              const at::Tensor& w_hh, const at::Tensor& g_ih,
                              const at::Tensor& g_hh, const at::Tensor& g_c,
                              const at::Tensor& b_c, const at::Tensor& len,
                              const at::Tensor& hbuf, const at::Tensor& cbuf,
                              const at::Tensor& gates, const at::Tensor& xih,
                              const at::Tensor& xhh, const at::Tensor& ch, const at::Tensor& rs,
                              const at::Tensor& gy, const at::Tensor& ghn,
                              const at::Tensor& gcn) {
  const char* op = "seqlab_engine.ln_backward";
  check_ln_mode(op, mode);
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1);
  TORCH_CHECK(hbuf.defined() && hbuf.dim() == 3, op,
              ": hbuf: expected shape (T + 1, B, H) as returned by ln_forward, got ",
              hbuf.defined() ? shape_str(hbuf.sizes()) : std::string("None"));
  const int64_t H = hbuf.size(2), G = mode == LN_LSTM ? 4 : 3, K = mode == LN_LSTM ? 3 : 2;
  const std::string saved = "as returned by ln_forward(save=True)";
  check_like(op, "hbuf", hbuf, {T + 1, B, H}, x, "(T + 1, B, H) " + saved);
  check_ln_params(op, mode, x, H, w_ih, w_hh, g_ih, g_hh, g_c, b_c);
  if (mode == LN_LSTM) {
    check_like(op, "cbuf", cbuf, {T + 1, B, H}, x, "(T + 1, B, H) " + saved);
    check_like(op, "ch", ch, {T, B, H}, x, "(T, B, H) " + saved);
    check_like(op, "gcn", gcn, {B, H}, x, "(B, H) like c_n (mode lnlstm)");
  }
  check_like(op, "gates", gates, {T, B, 4 * H}, x, "(T, B, 4·H) " + saved);
  check_like(op, "xih", xih, {T, B, G * H}, x, "(T, B, G·H) " + saved);
  check_like(op, "xhh", xhh, {T, B, G * H}, x, "(T, B, G·H) " + saved);
  check_like(op, "rs", rs, {T, B, K}, x, "(T, B, " + std::to_string(K) + ") " + saved);
  check_like(op, "gy", gy, {T, B, H}, x, "(T, B, H) like the output y", true);
  check_like(op, "ghn", ghn, {B, H}, x, "(B, H) like h_n");
  check_lengths(op, len, T, B);
}

// ---- the ops (the _masked twins: recurrent dropout, the product reads h_prev ⊙ h_mask (B, H))

std::vector<at::Tensor> ln_forward_any(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                       const std::optional<at::Tensor>& c0,
                                       const at::Tensor& w_ih, const at::Tensor& w_hh,
                                       const std::optional<at::Tensor>& b_ih,
                                       const std::optional<at::Tensor>& b_hh,
                                       const at::Tensor& g_ih, const at::Tensor& g_hh,
                                       const std::optional<at::Tensor>& g_c,
                                       const std::optional<at::Tensor>& b_c,
                                       const std::optional<at::Tensor>& lengths, bool reverse,
                                       bool save, const at::Tensor& h_mask, const char* op) {
  check_ln_forward(mode, x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh), g_ih, g_hh, opt(g_c),
                   opt(b_c), opt(lengths));
  if (h_mask.defined()) check_like(op, "h_mask", h_mask, {x.size(1), h0.size(1)}, x, "(B, H)");
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_ln_forward", [&] {
    if (mode == LN_LSTM)
      return ln_forward_impl<scalar_t, true>(x, h0, opt(c0), w_ih, w_hh, opt(b_ih), opt(b_hh),
                                             g_ih, g_hh, opt(g_c), opt(b_c), opt(lengths),
                                             reverse, save, h_mask);
    return ln_forward_impl<scalar_t, false>(x, h0, at::Tensor(), w_ih, w_hh, opt(b_ih),
                                            opt(b_hh), g_ih, g_hh, at::Tensor(), at::Tensor(),
                                            opt(lengths), reverse, save, h_mask);
  });
}

std::vector<at::Tensor> ln_forward(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                                   const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                   const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                                   const std::optional<at::Tensor>& b_hh,
                                   const at::Tensor& g_ih, const at::Tensor& g_hh,
                                   const std::optional<at::Tensor>& g_c,
                                   const std::optional<at::Tensor>& b_c,
                                   const std::optional<at::Tensor>& lengths, bool reverse,
                                   bool save) {
  return ln_forward_any(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, lengths,
                        reverse, save, at::Tensor(), "seqlab_engine.ln_forward");
}

std::vector<at::Tensor> ln_forward_masked(
    int64_t mode, const at::Tensor& x, const at::Tensor& h0, const std::optional<at::Tensor>& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const at::Tensor& g_ih, const at::Tensor& g_hh,
    const std::optional<at::Tensor>& g_c, const std::optional<at::Tensor>& b_c,
    const std::optional<at::Tensor>& lengths, bool reverse, bool save, const at::Tensor& h_mask) {
  const char* op = "seqlab_engine.ln_forward_masked";
  TORCH_CHECK(h_mask.defined(), op, ": h_mask: expected a (B, H) tensor, got None");
  return ln_forward_any(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, lengths,
                        reverse, save, h_mask, op);
}

std::vector<at::Tensor> ln_backward_any(
    int64_t mode, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& g_ih, const at::Tensor& g_hh, const std::optional<at::Tensor>& g_c,
    const std::optional<at::Tensor>& b_c, bool has_b_ih, bool has_b_hh, bool has_b_c,
    const std::optional<at::Tensor>& lengths, bool reverse, const at::Tensor& hbuf,
    const at::Tensor& cbuf, const at::Tensor& gates, const at::Tensor& xih,
    const at::Tensor& xhh, const at::Tensor& ch, const at::Tensor& rs, const at::Tensor& gy,
    const at::Tensor& ghn, const std::optional<at::Tensor>& gcn, const at::Tensor& h_mask,
    const char* op) {
  check_ln_backward(mode, x, w_ih, w_hh, g_ih, g_hh, opt(g_c), opt(b_c), opt(lengths), hbuf, cbuf,
                    gates, xih, xhh, ch, rs, gy, ghn, opt(gcn));
  if (h_mask.defined()) check_like(op, "h_mask", h_mask, {x.size(1), hbuf.size(2)}, x, "(B, H)");
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_ln_backward", [&] {
    if (mode == LN_LSTM)
      return ln_backward_impl<scalar_t, true>(x, w_ih, w_hh, g_ih, g_hh, opt(g_c), opt(b_c),
                                              has_b_ih, has_b_hh, has_b_c, opt(lengths), reverse,
                                              hbuf, cbuf, gates, xih, xhh, ch, rs, gy, ghn,
                                              opt(gcn), h_mask);
    return ln_backward_impl<scalar_t, false>(x, w_ih, w_hh, g_ih, g_hh, at::Tensor(),
                                             at::Tensor(), has_b_ih, has_b_hh, false,
                                             opt(lengths), reverse, hbuf, cbuf, gates, xih, xhh,
                                             ch, rs, gy, ghn, at::Tensor(), h_mask);
  });
}

std::vector<at::Tensor> ln_backward(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const at::Tensor& g_ih,
                                    const at::Tensor& g_hh, const std::optional<at::Tensor>& g_c,
                                    const std::optional<at::Tensor>& b_c, bool has_b_ih,
                                    bool has_b_hh, bool has_b_c,
                                    const std::optional<at::Tensor>& lengths, bool reverse,
                                    const at::Tensor& hbuf, const at::Tensor& cbuf,
                                    const at::Tensor& gates, const at::Tensor& xih,
                                    const at::Tensor& xhh, const at::Tensor& ch,
                                    const at::Tensor& rs, const at::Tensor& gy,
                                    const at::Tensor& ghn, const std::optional<at::Tensor>& gcn) {
  return ln_backward_any(mode, x, w_ih, w_hh, g_ih, g_hh, g_c, b_c, has_b_ih, has_b_hh, has_b_c,
                         lengths, reverse, hbuf, cbuf, gates, xih, xhh, ch, rs, gy, ghn, gcn,
                         at::Tensor(), "seqlab_engine.ln_backward");
}

std::vector<at::Tensor> ln_backward_masked(
    int64_t mode, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const at::Tensor& g_ih, const at::Tensor& g_hh, const std::optional<at::Tensor>& g_c,
    const std::optional<at::Tensor>& b_c, bool has_b_ih, bool has_b_hh, bool has_b_c,
    const std::optional<at::Tensor>& lengths, bool reverse, const at::Tensor& hbuf,
    const at::Tensor& cbuf, const at::Tensor& gates, const at::Tensor& xih,
    const at::Tensor& xhh, const at::Tensor& ch, const at::Tensor& rs, const at::Tensor& gy,
    const at::Tensor& ghn, const std::optional<at::Tensor>& gcn, const at::Tensor& h_mask) {
  const char* op = "seqlab_engine.ln_backward_masked";
  TORCH_CHECK(h_mask.defined(), op, ": h_mask: expected a (B, H) tensor, got None");
  return ln_backward_any(mode, x, w_ih, w_hh, g_ih, g_hh, g_c, b_c, has_b_ih, has_b_hh, has_b_c,
                         lengths, reverse, hbuf, cbuf, gates, xih, xhh, ch, rs, gy, ghn, gcn,
                         h_mask, op);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(seqlab_engine, m) {
  m.def("ln_forward", &ln_forward);
  m.def("ln_backward", &ln_backward);
  m.def("ln_forward_masked", &ln_forward_masked);
  m.def("ln_backward_masked", &ln_backward_masked);
  // the threads of the batch-row team the loops would use for this shape (1: not that team)
  m.def("ln_row_team_size(int B, int G, int H, int itemsize) -> int", &ln_row_team_size);
}
