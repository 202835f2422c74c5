// minGRU / minLSTM: the linear recurrence h_t = a_t h_{t−1} + b_t fused with its gates, forward
// and hand-derived backward (equations: seqlab/functional/minimal.py, seqlab/engine/minimal.py),
// evaluated as a chunked scan over time.
//
//   torch.ops.seqlab_engine.minimal_forward(kind, xw (T, B, G·H), bias?, h0 (B, H), lengths?,
//       chunks) -> h (T, B, H)               the state after every step (padded: kept)
//   torch.ops.seqlab_engine.minimal_backward(kind, xw, bias?, h, h0, c (T, B, H), ghn (B, H),
//       lengths?, chunks) -> [dxw (T, B, G·H), dh0 (B, H), db (K, B, G·H)]
//
// kind 0 = minGRU (G = 2: k, ĥ), 1 = minLSTM (G = 3: k_f, k_i, ĥ). xw = x W_ihᵀ without the
// bias (the kernels add it), already in the order of processing (the caller reverses it for
// reverse=True). c = ∂L/∂y may have any strides (an expanded gradient is read in place);
// padded steps ignore it. db holds Σ_t dxw per chunk and batch row (the caller sums it).
//
// Each (row, unit) column is an independent recurrence. chunks = K splits time too:
//   1. each chunk but the last, from a zero state: its end state S_k and P_k = Π a over it;
//   2. per column, the carries C_0 = h0, C_{k+1} = P_k C_k + S_k;
//   3. each chunk from its carry C_k, writing h (the sequential pass).
// A direct (not log-space) scan: the a_t lie in (0, 1], so P_k only shrinks, and
// underflows to 0 where the carry's contribution is below the type's range anyway. The
// backward is the same scan reversed in time on ĝ_t = c_t + a_{t+1} ĝ_{t+1}. K = 1 is the
// sequential loop (threads split the B·H columns, no synchronisation). K ≤ 0 picks K: 1
// unless the columns are too few for the thread team and more than 2 threads run (a chunked
// scan does about twice the pointwise work of the loop, so it gains only from P > 2 threads).
// Included once at the end of recurrence.cpp; registers its ops as a library fragment.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

// the row kernels, compiled per ISA (they reuse kernels.h's v_exp/v_sigmoid of each copy)
namespace seqlab_base::mrows {
#include "minimal_rows.h"
}  // namespace seqlab_base::mrows
#ifdef SEQLAB_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace seqlab_avx2::mrows {
#include "minimal_rows.h"
}  // namespace seqlab_avx2::mrows
#pragma GCC pop_options
// An AVX-512 copy: the pointwise passes are compute-bound (two exp per unit and step) and
// run ~2x faster on 16 lanes. It brings its own copy of kernels.h (only its math is used;
// the rest are templates, never instantiated here). Its own namespace: recurrence.cpp has an
// AVX-512 copy of kernels.h too, compiled without prefer-vector-width=512.
#if !defined(__clang__)
#define SEQLAB_MINIMAL_AVX512 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,prefer-vector-width=512")
namespace seqlab_avx512m {
#include "kernels.h"
namespace mrows {
#include "minimal_rows.h"
}  // namespace mrows
}  // namespace seqlab_avx512m
#pragma GCC pop_options
#endif
namespace seqlab_minimal {
// SEQLAB_MINIMAL_ISA=avx2 (read once) keeps the AVX2 copy on an AVX-512 machine (tests)
inline bool use_avx512() {
#ifdef SEQLAB_MINIMAL_AVX512
  static const bool yes = [] {
    const char* env = std::getenv("SEQLAB_MINIMAL_ISA");
    if (env != nullptr && std::string(env) == "avx2") return false;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           cpu_has_avx2();
  }();
  return yes;
#else
  return false;
#endif
}
}  // namespace seqlab_minimal
#ifdef SEQLAB_MINIMAL_AVX512
#define SEQLAB_MROWS(name)                                      \
  (seqlab_minimal::use_avx512() ? &seqlab_avx512m::mrows::name \
   : cpu_has_avx2()             ? &seqlab_avx2::mrows::name   \
                                : &seqlab_base::mrows::name)
#else
#define SEQLAB_MROWS(name) (cpu_has_avx2() ? &seqlab_avx2::mrows::name : &seqlab_base::mrows::name)
#endif
#else
#define SEQLAB_MROWS(name) (&seqlab_base::mrows::name)
#endif

namespace seqlab_minimal {

struct Dims {
  int64_t T, B, H, G;
};

// Calls body(t, b, j0, j1, n0) for the rows b and unit ranges [j0, j1) that make up the
// flattened columns [c0, c1) (column = b·H + j), at step t; n0 = b·H + j0 − c0 is the
// offset of the range in the caller's per-column arrays.
template <typename F>
inline void for_columns(const Dims& d, int64_t t, int64_t c0, int64_t c1, F&& body) {
  for (int64_t b = c0 / d.H; b * d.H < c1; ++b) {
    const int64_t j0 = std::max(c0 - b * d.H, int64_t(0));
    const int64_t j1 = std::min(c1 - b * d.H, d.H);
    body(t, b, j0, j1, b * d.H + j0 - c0);
  }
}

inline int64_t grain(int64_t T) { return T > 0 && T < 8192 ? 8192 / T : 1; }

// K ≤ 0: the automatic choice (see the top of the file); else K clamped to [1, T]
inline int64_t pick_chunks(int64_t chunks, const Dims& d) {
  const int64_t P = at::get_num_threads(), BH = d.B * d.H;
  if (chunks <= 0) chunks = (P <= 2 || BH >= 128 * P) ? 1 : std::min(P, d.T / 16);
  return std::max<int64_t>(1, std::min(chunks, d.T));
}

// Runs body(k, c0, c1) over the chunks k ∈ [k0, k1) × blocks of columns, in parallel.
template <typename F>
inline void for_chunk_blocks(const Dims& d, int64_t k0, int64_t k1, F&& body) {
  const int64_t BH = d.B * d.H, K = k1 - k0;
  if (K <= 0 || BH == 0) return;
  const int64_t P = at::get_num_threads();
  const int64_t nb = std::max<int64_t>(1, std::min((2 * P + K - 1) / K, BH / 8));
  const int64_t cb = (BH + nb - 1) / nb;
  const auto items = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c0 = (i % nb) * cb, c1 = std::min(BH, c0 + cb);
      if (c0 < c1) body(k0 + i / nb, c0, c1);
    }
  };
  if (BH * d.T < 8192) return items(0, K * nb);  // too little work to wake the team for
  at::parallel_for(0, K * nb, 1, items);
}

template <typename S>
struct Args {
  Dims d;
  const S* xw;
  const S* bias;  // (G·H,), zeros when the layer has none
  const S* h0;
  const int64_t* len;  // nullptr: no lengths
  int64_t K;
  int64_t t_of(int64_t k) const { return k * d.T / K; }  // chunk k is [t_of(k), t_of(k + 1))
  bool padded(int64_t t, int64_t b) const { return len != nullptr && t >= len[b]; }
};

// Forward over steps [t0, t1) of the columns [c0, c1) from the state st (c1 − c0 values):
// writes h (out) or, where p is given, only updates st and p = Π a (a chunk's aggregate).
template <typename S>
void fwd_pass(int64_t kind, const Args<S>& a, int64_t t0, int64_t t1, int64_t c0, int64_t c1,
              S* st, S* p, S* out) {
  const Dims& d = a.d;
  const int64_t GH = d.G * d.H, H = d.H;
  const auto gru = SEQLAB_MROWS(mingru_fwd_row<S>);
  const auto lstm = SEQLAB_MROWS(minlstm_fwd_row<S>);
  const auto gru_agg = SEQLAB_MROWS(mingru_fwd_agg<S>);
  const auto lstm_agg = SEQLAB_MROWS(minlstm_fwd_agg<S>);
  for (int64_t t = t0; t < t1; ++t) {
    for_columns(d, t, c0, c1, [&](int64_t t, int64_t b, int64_t j0, int64_t j1, int64_t n0) {
      const S* row = a.xw + (t * d.B + b) * GH + j0;
      const S* bb = a.bias + j0;
      S* s = st + n0;
      const int64_t n = j1 - j0;
      if (a.padded(t, b)) {  // padded: the state stays (a = 1, b = 0)
        if (p == nullptr) std::copy(s, s + n, out + (t * d.B + b) * H + j0);
      } else if (p != nullptr) {
        if (kind == 0) gru_agg(n, row, row + H, bb, bb + H, s, p + n0);
        else lstm_agg(n, row, row + H, row + 2 * H, bb, bb + H, bb + 2 * H, s, p + n0);
      } else {
        S* o = out + (t * d.B + b) * H + j0;
        if (kind == 0) gru(n, row, row + H, bb, bb + H, s, o);
        else lstm(n, row, row + H, row + 2 * H, bb, bb + H, bb + 2 * H, s, o);
      }
    });
  }
}

template <typename S>
void forward_cpu(int64_t kind, const Args<S>& a, S* h) {
  const Dims& d = a.d;
  const int64_t BH = d.B * d.H, K = a.K;
  if (K == 1) {
    at::parallel_for(0, BH, grain(d.T), [&](int64_t c0, int64_t c1) {
      std::vector<S> st(a.h0 + c0, a.h0 + c1);
      fwd_pass(kind, a, 0, d.T, c0, c1, st.data(), static_cast<S*>(nullptr), h);
    });
    return;
  }
  std::vector<S> agg(K * BH, S(0)), prod(K * BH, S(1));
  for_chunk_blocks(d, 0, K - 1, [&](int64_t k, int64_t c0, int64_t c1) {
    fwd_pass(kind, a, a.t_of(k), a.t_of(k + 1), c0, c1, agg.data() + k * BH + c0,
             prod.data() + k * BH + c0, static_cast<S*>(nullptr));
  });
  std::vector<S> carry(K * BH);  // C_k, then the running state of chunk k's pass
  at::parallel_for(0, BH, 1024, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      S v = a.h0[c];
      for (int64_t k = 0; k < K; ++k) {
        carry[k * BH + c] = v;
        v = prod[k * BH + c] * v + agg[k * BH + c];
      }
    }
  });
  for_chunk_blocks(d, 0, K, [&](int64_t k, int64_t c0, int64_t c1) {
    fwd_pass(kind, a, a.t_of(k), a.t_of(k + 1), c0, c1, carry.data() + k * BH + c0,
             static_cast<S*>(nullptr), h);
  });
}

template <typename S>
struct Grads {
  const S* h;
  const S* c;
  int64_t cs0, cs1, cs2;  // c's strides (cs2 is 0 or 1)
  S* dxw;
  S* db;  // (K, B, G·H)
};

// Backward over steps [t0, t1) in reverse of the columns [c0, c1), carrying g = a_{t+1} ĝ_{t+1}
// (c1 − c0 values): writes dxw and db of chunk k or, where p is given, only updates g and
// p = Π a (a chunk's aggregate).
template <typename S>
void bwd_pass(int64_t kind, const Args<S>& a, const Grads<S>& gr, int64_t k, int64_t t0,
              int64_t t1, int64_t c0, int64_t c1, S* g, S* p) {
  const Dims& d = a.d;
  const int64_t GH = d.G * d.H, H = d.H;
  const auto gru = SEQLAB_MROWS(mingru_bwd_row<S>);
  const auto lstm = SEQLAB_MROWS(minlstm_bwd_row<S>);
  const auto gru_agg = SEQLAB_MROWS(mingru_bwd_agg<S>);
  const auto lstm_agg = SEQLAB_MROWS(minlstm_bwd_agg<S>);
  std::vector<S> bcast(gr.cs2 == 0 ? d.H : 0);  // an expanded c's row, made dense
  for (int64_t t = t1 - 1; t >= t0; --t) {
    for_columns(d, t, c0, c1, [&](int64_t t, int64_t b, int64_t j0, int64_t j1, int64_t n0) {
      const int64_t r = t * d.B + b, n = j1 - j0;
      const S* row = a.xw + r * GH + j0;
      const S* bb = a.bias + j0;
      S* drow = gr.dxw + r * GH + j0;
      if (a.padded(t, b)) {  // padded: no gradient to its xw, ĝ passes (a = 1, c ignored)
        if (p == nullptr)
          for (int64_t q = 0; q < d.G; ++q) std::fill(drow + q * H, drow + q * H + n, S(0));
        return;
      }
      const S* cr = gr.c + t * gr.cs0 + b * gr.cs1;
      if (gr.cs2 == 0) {
        std::fill(bcast.begin(), bcast.begin() + n, *cr);
        cr = bcast.data();
      } else {
        cr += j0;
      }
      S* gg = g + n0;
      if (p != nullptr) {
        if (kind == 0) gru_agg(n, row, bb, cr, gg, p + n0);
        else lstm_agg(n, row, row + H, bb, bb + H, cr, gg, p + n0);
        return;
      }
      const S* hp = (t > 0 ? gr.h + (r - d.B) * H : a.h0 + b * H) + j0;
      S* db = gr.db + (k * d.B + b) * GH + j0;
      if (kind == 0) {
        gru(n, row, row + H, bb, bb + H, hp, cr, gg, drow, drow + H, db, db + H);
      } else {
        lstm(n, row, row + H, row + 2 * H, bb, bb + H, bb + 2 * H, hp, cr, gg, drow, drow + H,
             drow + 2 * H, db, db + H, db + 2 * H);
      }
    });
  }
}

template <typename S>
void backward_cpu(int64_t kind, const Args<S>& a, const Grads<S>& gr, const S* ghn, S* dh0) {
  const Dims& d = a.d;
  const int64_t BH = d.B * d.H, K = a.K;
  if (K == 1) {
    at::parallel_for(0, BH, grain(d.T), [&](int64_t c0, int64_t c1) {
      std::vector<S> g(ghn + c0, ghn + c1);  // ∂L/∂h_t in total, carried backwards
      bwd_pass(kind, a, gr, 0, 0, d.T, c0, c1, g.data(), static_cast<S*>(nullptr));
      std::copy(g.begin(), g.end(), dh0 + c0);
    });
    return;
  }
  std::vector<S> agg(K * BH, S(0)), prod(K * BH, S(1));
  for_chunk_blocks(d, 1, K, [&](int64_t k, int64_t c0, int64_t c1) {
    bwd_pass(kind, a, gr, k, a.t_of(k), a.t_of(k + 1), c0, c1, agg.data() + k * BH + c0,
             prod.data() + k * BH + c0);
  });
  std::vector<S> carry(K * BH);  // the g entering chunk k from above, then its running value
  at::parallel_for(0, BH, 1024, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      S v = ghn[c];
      for (int64_t k = K - 1; k >= 0; --k) {
        carry[k * BH + c] = v;
        v = prod[k * BH + c] * v + agg[k * BH + c];
      }
    }
  });
  for_chunk_blocks(d, 0, K, [&](int64_t k, int64_t c0, int64_t c1) {
    bwd_pass(kind, a, gr, k, a.t_of(k), a.t_of(k + 1), c0, c1, carry.data() + k * BH + c0,
             static_cast<S*>(nullptr));
  });
  std::copy(carry.begin(), carry.begin() + BH, dh0);  // chunk 0's g after its first step
}

inline void check(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape,
                  const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, ": expected shape ", shape, ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device().is_cpu(), op, ": ", name,
              ": expected a CPU ", like.scalar_type(), " tensor, got ", t.scalar_type(), " on ",
              t.device());
}

inline Dims check_common(const char* op, int64_t kind, const at::Tensor& xw,
                         const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                         const std::optional<at::Tensor>& lengths) {
  TORCH_CHECK(kind == 0 || kind == 1, op, ": kind: expected 0 (mingru) or 1 (minlstm), got ",
              kind);
  TORCH_CHECK(xw.dim() == 3 && xw.device().is_cpu(), op,
              ": xw: expected a CPU (T, B, G·H) tensor, got ", xw.sizes(), " on ", xw.device());
  TORCH_CHECK(xw.scalar_type() == at::kFloat || xw.scalar_type() == at::kDouble, op,
              ": xw: expected float32 or float64, got ", xw.scalar_type());
  TORCH_CHECK(h0.dim() == 2, op, ": h0: expected (B, H), got ", h0.sizes());
  const int64_t G = kind == 0 ? 2 : 3;
  Dims d{xw.size(0), xw.size(1), h0.size(1), G};
  check(op, "xw", xw, {d.T, d.B, G * d.H}, xw);
  check(op, "h0", h0, {d.B, d.H}, xw);
  if (bias) check(op, "bias", *bias, {G * d.H}, xw);
  if (lengths) {
    const at::Tensor& l = *lengths;
    TORCH_CHECK(l.dim() == 1 && l.size(0) == d.B && l.scalar_type() == at::kLong &&
                    l.device().is_cpu(),
                op, ": lengths: expected a CPU int64 tensor of shape (", d.B, ",), got ",
                l.scalar_type(), " ", l.sizes());
    const at::Tensor lc = l.contiguous();
    const int64_t* p = lc.data_ptr<int64_t>();
    for (int64_t b = 0; b < d.B; ++b)
      TORCH_CHECK(p[b] >= 0 && p[b] <= d.T, op, ": lengths: expected values in [0, ", d.T,
                  "], got ", p[b], " at ", b);
  }
  return d;
}

inline at::Tensor dense_bias(const std::optional<at::Tensor>& bias, const at::Tensor& xw,
                             int64_t GH) {
  return bias ? bias->contiguous() : at::zeros({GH}, xw.options());
}

at::Tensor minimal_forward(int64_t kind, const at::Tensor& xw,
                           const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                           const std::optional<at::Tensor>& lengths, int64_t chunks) {
  const Dims d = check_common("minimal_forward", kind, xw, bias, h0, lengths);
  const at::Tensor x = xw.contiguous(), s0 = h0.contiguous();
  const at::Tensor bb = dense_bias(bias, xw, d.G * d.H);
  const at::Tensor len = lengths ? lengths->contiguous() : at::Tensor();
  at::Tensor h = at::empty({d.T, d.B, d.H}, xw.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "seqlab_minimal_forward", [&] {
    const Args<scalar_t> a{d,
                           x.data_ptr<scalar_t>(),
                           bb.data_ptr<scalar_t>(),
                           s0.data_ptr<scalar_t>(),
                           lengths ? len.data_ptr<int64_t>() : nullptr,
                           pick_chunks(chunks, d)};
    forward_cpu<scalar_t>(kind, a, h.data_ptr<scalar_t>());
  });
  return h;
}

std::vector<at::Tensor> minimal_backward(int64_t kind, const at::Tensor& xw,
                                         const std::optional<at::Tensor>& bias,
                                         const at::Tensor& h, const at::Tensor& h0,
                                         const at::Tensor& c, const at::Tensor& ghn,
                                         const std::optional<at::Tensor>& lengths,
                                         int64_t chunks) {
  const char* op = "minimal_backward";
  const Dims d = check_common(op, kind, xw, bias, h0, lengths);
  check(op, "h", h, {d.T, d.B, d.H}, xw);
  check(op, "c", c, {d.T, d.B, d.H}, xw);
  check(op, "ghn", ghn, {d.B, d.H}, xw);
  const at::Tensor x = xw.contiguous(), hs = h.contiguous(), s0 = h0.contiguous();
  const at::Tensor bb = dense_bias(bias, xw, d.G * d.H);
  // c is read in place when its units are dense or broadcast (an expanded gradient)
  const at::Tensor cc = (c.stride(2) == 0 || c.stride(2) == 1) ? c : c.contiguous();
  const at::Tensor gn = ghn.contiguous();
  const at::Tensor len = lengths ? lengths->contiguous() : at::Tensor();
  const int64_t K = pick_chunks(chunks, d);
  at::Tensor dxw = pooled(x.sizes(), x.options());  // (the caller drops it after two GEMMs)
  at::Tensor dh0 = at::empty({d.B, d.H}, x.options());
  at::Tensor db = at::zeros({K, d.B, d.G * d.H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "seqlab_minimal_backward", [&] {
    const Args<scalar_t> a{d,
                           x.data_ptr<scalar_t>(),
                           bb.data_ptr<scalar_t>(),
                           s0.data_ptr<scalar_t>(),
                           lengths ? len.data_ptr<int64_t>() : nullptr,
                           K};
    const Grads<scalar_t> gr{hs.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                             cc.stride(0),            cc.stride(1),
                             cc.stride(2),            dxw.data_ptr<scalar_t>(),
                             db.data_ptr<scalar_t>()};
    backward_cpu<scalar_t>(kind, a, gr, gn.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>());
  });
  return {dxw, dh0, db};
}

// xw = x W_ihᵀ, (T, B, N) into a pooled buffer (recurrence.cpp's `pooled`): the projection of
// a long sequence is the biggest buffer of a training step, and a fresh one is mapped and
// page-faulted on every call
at::Tensor minimal_project(const at::Tensor& x, const at::Tensor& w) {
  const char* op = "minimal_project";
  TORCH_CHECK(x.dim() == 3 && x.device().is_cpu(), op,
              ": x: expected a CPU (T, B, I) tensor, got ", x.sizes(), " on ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x: expected float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(2), op, ": w: expected shape (N, ", x.size(2),
              ") (I from x), got ", w.sizes());
  check(op, "w", w, w.sizes(), x);
  const int64_t T = x.size(0), B = x.size(1), N = w.size(0);
  at::Tensor xw = pooled({T, B, N}, x.options());
  at::Tensor rows = xw.view({T * B, N});
  at::mm_out(rows, x.reshape({T * B, x.size(2)}), w.t());
  return xw;
}

// the instruction set the row kernels run with: "avx512", "avx2+fma" or "baseline"
std::string minimal_isa() {
  const auto k = SEQLAB_MROWS(mingru_fwd_row<float>);
#ifdef SEQLAB_MINIMAL_AVX512
  if (k == &seqlab_avx512m::mrows::mingru_fwd_row<float>) return "avx512";
#endif
  return k == &seqlab_base::mrows::mingru_fwd_row<float> ? "baseline" : "avx2+fma";
}

}  // namespace seqlab_minimal

TORCH_LIBRARY_FRAGMENT(seqlab_engine, m) {
  m.def("minimal_isa", &seqlab_minimal::minimal_isa);
  m.def("minimal_project", &seqlab_minimal::minimal_project);
  m.def("minimal_forward", &seqlab_minimal::minimal_forward);
  m.def("minimal_backward", &seqlab_minimal::minimal_backward);
}
