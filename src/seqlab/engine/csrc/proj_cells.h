// Native time loop of the projected LSTM (torch.nn's proj_size; equations in
// seqlab/functional/proj.py), forward and hand-derived BPTT, registered as
// torch.ops.seqlab_engine.{proj_forward, proj_backward}. Buffers and argument lists are those
// of seqlab/engine/fused_proj.py (the same algorithm in eager torch ops).
//
// Included once by recurrence.cpp at global scope, after its anonymous namespace (it reuses
// gemm.h's products, checks.h's argument checks, sum_bias and opt there).
//
// Per step t (h (B, P), c and m (B, H)):
//   forward   a_t += h_{t−1} W_hhᵀ (per-step GEMM into the all-steps input projection xw);
//             row kernel: gates, c_t, m_t = o ⊙ tanh c_t;  h_t = m_t W_hrᵀ (per-step GEMM)
//   backward  dh += dy_t;  dm = dh W_hr (GEMM);  row kernel: dA_t, dc;  dh ← dA_t W_hh (GEMM)
// The projection makes h_t depend on every unit of m_t, so with a thread team (team.h's
// run_team and barrier) a step runs in two phases: each thread computes its units' share of
// the recurrent product, gates, c and m, the team meets, then each thread computes its slice
// of the P columns of h_t = m_t W_hrᵀ and the team meets again. The backward mirrors it:
// (0) dm = dh W_hr for own units, their dA, dc; (1) own columns of dh_{t−1} = dA_t W_hh.
// One thread (small steps, or one torch thread) runs the same phases in turn. The per-step
// products use gemm.h's packed/panel GEMMs with the shard's slices of the weights. The input
// projection is one GEMM before the loop; dx, dW_ih, dW_hh, the bias gradient and
// dW_hr = Σ_t dh_tᵀ m_t are single GEMMs over all T·B rows after it.

template <typename S>
struct ProjStep {
  int64_t H = 0, t = 0;
  int64_t u0 = 0, u1 = 0;        // the cell units handled by this call: [u0, u1)
  const int64_t* len = nullptr;  // valid steps per batch row, or null (all valid)
  S* g = nullptr;         // (B, 4H) forward: xw_t in, activated gates out; backward: saved
  const S* rec = nullptr; // forward: h_{t−1} times the shard's rows of W_hh (B, 4n), n = u1−u0
  const S* cp = nullptr;  // c_{t−1} (B, H)
  S* cc = nullptr;        // c_t (B, H): written by the forward, read by the backward
  S* m = nullptr;         // out: m_t = o ⊙ tanh c_t (B, H), 0 on padded rows
  const S* dm = nullptr;  // backward: dh W_hr for the shard's units (B, n)
  S* dc = nullptr;        // backward: dL/dc, in and out (B, H)
  S* da = nullptr;        // backward out: dA_t (B, 4H)
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

namespace seqlab_base {
#include "proj_kernels.h"
}  // namespace seqlab_base

#ifdef SEQLAB_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace seqlab_avx2 {
#include "proj_kernels.h"
}  // namespace seqlab_avx2
#pragma GCC pop_options
#endif

namespace {

template <typename S>
using ProjRows = void (*)(const ProjStep<S>&, int64_t, int64_t);

// Threads in the team: per step 5·B·H·P multiply-adds (B·4H·P recurrent, B·P·H projection)
// must pay for two barriers; each shard keeps ≥ 8 cell units and ≥ 4 projected columns.
// SEQLAB_TEAM=0 turns the team off, as for the classic loop.
inline int64_t proj_team_size(int64_t B, int64_t H, int64_t P) {
  static const bool off = [] {
    const char* v = std::getenv("SEQLAB_TEAM");
    return v != nullptr && std::string(v) == "0";
  }();
#ifndef _OPENMP
  return 1;
#endif
  if (off || at::in_parallel_region() || 5 * B * H * P < kTeamMacs || H < 16 || P < 8) return 1;
  return std::max<int64_t>(1, std::min({int64_t(at::get_num_threads()), H / 8, P / 4}));
}

// One thread's share: cell units [u0, u1) (their gates, c and m) and projected columns
// [p0, p1) (of h = m W_hrᵀ forward, of dh_{t−1} = dA W_hh backward).
template <typename S>
struct ProjShard {
  int64_t u0 = 0, u1 = 0, p0 = 0, p1 = 0;
  at::Tensor w;    // forward: the shard's rows of W_hh, gate-major (4n, P)
  at::Tensor tmp;  // forward: rec = h_{t−1} wᵀ (B, 4n); backward: dm = dh W_hr[:, u0:u1] (B, n)
  std::optional<PackedW<S>> pw;   // forward: w; backward: W_hr's columns [u0, u1)
  std::optional<PackedW<S>> pw2;  // forward: W_hr's rows [p0, p1); backward: W_hh's columns
};

template <typename S>
std::vector<ProjShard<S>> proj_shards(const at::Tensor& w_hh, const at::Tensor& w_hr,
                                      int64_t B, int64_t T, bool fwd) {
  const int64_t P = w_hr.size(0), H = w_hr.size(1);
  const int64_t nth = proj_team_size(B, H, P);
  const int64_t step = nth == 1 ? H : ((H + nth - 1) / nth + 7) / 8 * 8;
  const S* whh = w_hh.data_ptr<S>();
  const S* whr = w_hr.data_ptr<S>();
  std::vector<ProjShard<S>> out;
  // (H = 0, from a direct call of the op: one empty shard, so the loops still run)
  for (int64_t u0 = 0; u0 < H || out.empty(); u0 += std::max<int64_t>(step, 1)) {
    ProjShard<S>& k = out.emplace_back();
    k.u0 = u0;
    k.u1 = std::min(H, u0 + step);
  }
  const int64_t ns = static_cast<int64_t>(out.size());
  for (int64_t q = 0; q < ns; ++q) {
    ProjShard<S>& k = out[q];
    const int64_t n = k.u1 - k.u0;
    k.p0 = P * q / ns;
    k.p1 = P * (q + 1) / ns;
    const int64_t np = k.p1 - k.p0;
    if (fwd) {
      k.w = unit_rows(w_hh, 4, H, k.u0, n).contiguous();
      k.tmp = at::empty({B, 4 * n}, w_hh.options());
      k.pw.emplace(true, B, 4 * n, P, k.w.template data_ptr<S>(), P, true, T * B);
      k.pw2.emplace(true, B, np, H, whr + k.p0 * H, H, true, T * B);
    } else {
      k.tmp = at::empty({B, n}, w_hh.options());
      k.pw.emplace(false, B, n, P, whr + k.u0, H, true, T * B);
      k.pw2.emplace(false, B, np, 4 * H, whh + k.p0, P, true, T * B);
    }
  }
  return out;
}

// row b's columns [p0, p1) of a (B, P) matrix: copied from `src`, or zero (src null)
template <typename S>
inline void put_cols(S* dst, const S* src, int64_t b, int64_t P, int64_t p0, int64_t p1) {
  if (src)
    std::memcpy(dst + b * P + p0, src + b * P + p0, sizeof(S) * (p1 - p0));
  else
    std::fill(dst + b * P + p0, dst + b * P + p1, S(0));
}

template <typename S>
std::vector<at::Tensor> proj_forward_impl(const at::Tensor& x, const at::Tensor& h0,
                                          const at::Tensor& c0, const at::Tensor& w_ih,
                                          const at::Tensor& w_hh, const at::Tensor& b_ih,
                                          const at::Tensor& b_hh, const at::Tensor& w_hr,
                                          const at::Tensor& len, bool reverse) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = h0.size(1), H = c0.size(1);
  const int64_t G = 4 * H;
  const at::Tensor x2 = x.view({T * B, I}), bias = sum_bias(b_ih, b_hh);
  at::Tensor gates = (bias.defined() ? at::addmm(bias, x2, w_ih.t()) : at::mm(x2, w_ih.t()));
  gates = gates.view({T, B, G});
  at::Tensor hbuf = at::empty({T + 1, B, P}, x.options());
  at::Tensor cbuf = at::empty({T + 1, B, H}, x.options());
  at::Tensor mbuf = at::empty({B, H}, x.options());
  const int64_t start = reverse ? T : 0, end = reverse ? 0 : T;
  hbuf.select(0, start).copy_(h0);
  cbuf.select(0, start).copy_(c0);
  at::Tensor y = len.defined() ? at::empty({T, B, P}, x.options())
                               : hbuf.narrow(0, reverse ? 0 : 1, T);
  S* hb = hbuf.data_ptr<S>();
  S* cb = cbuf.data_ptr<S>();
  S* gb = gates.data_ptr<S>();
  S* mb = mbuf.data_ptr<S>();
  S* yb = len.defined() ? y.data_ptr<S>() : nullptr;
  const S* whr = w_hr.data_ptr<S>();
  const int64_t* lens = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  std::vector<ProjShard<S>> shards = proj_shards<S>(w_hh, w_hr, B, T, true);
  const ProjRows<S> fwd = SEQLAB_ISA(proj_fwd<S>);
  {  // per-step products on one BLAS thread when small (not the GEMMs after the loop)
    BlasThreads small(B * G * P);
    // two phases per step, the team meeting after each: (0) the shard's units' gates, c, m;
    // (1) the shard's columns of h = m W_hrᵀ (reads every unit's m)
    run_team(static_cast<int64_t>(shards.size()), 2 * T, [&](int64_t q, int64_t sp) {
      ProjShard<S>& k = shards[q];
      const int64_t kk = sp / 2, t = reverse ? T - 1 - kk : kk;
      const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      const S* hp = hb + prev * B * P;
      if (sp % 2 == 0) {
        const int64_t n = k.u1 - k.u0;
        S* rec = k.tmp.template data_ptr<S>();
        gemm_p<S>(*k.pw, true, B, 4 * n, P, hp, P, k.w.template data_ptr<S>(), P, false, rec,
                  4 * n);
        ProjStep<S> s;
        s.H = H, s.t = t, s.u0 = k.u0, s.u1 = k.u1, s.len = lens;
        s.g = gb + t * B * G, s.rec = rec, s.m = mb;
        s.cp = cb + prev * B * H, s.cc = cb + cur * B * H;
        fwd(s, 0, B);
        return;
      }
      const int64_t np = k.p1 - k.p0;
      if (np == 0) return;
      S* hc = hb + cur * B * P;
      gemm_p<S>(*k.pw2, true, B, np, H, mb, H, whr + k.p0 * H, H, false, hc + k.p0, P);
      if (lens) {  // padded rows carry h and output 0
        for (int64_t b = 0; b < B; ++b) {
          const bool ok = t < lens[b];
          if (!ok) put_cols(hc, hp, b, P, k.p0, k.p1);
          put_cols(yb + t * B * P, ok ? hc : nullptr, b, P, k.p0, k.p1);
        }
      }
    });
  }
  return {y, hbuf.select(0, end).clone(), cbuf.select(0, end).clone(), hbuf, cbuf, gates};
}

template <typename S>
std::vector<at::Tensor> proj_backward_impl(const at::Tensor& x, const at::Tensor& w_ih,
                                           const at::Tensor& w_hh, const at::Tensor& w_hr,
                                           bool has_b_ih, bool has_b_hh, const at::Tensor& len,
                                           bool reverse, const at::Tensor& hbuf,
                                           const at::Tensor& cbuf, const at::Tensor& gates,
                                           const at::Tensor& gy_in, const at::Tensor& ghn,
                                           const at::Tensor& gcn) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), P = hbuf.size(2), H = cbuf.size(2);
  const int64_t G = 4 * H;
  const at::Tensor gy = gy_in.contiguous();  // a broadcast gradient (from .sum()) materialised
  at::Tensor da = at::empty({T, B, G}, x.options());
  at::Tensor dhs = at::empty({T, B, P}, x.options());   // dL/dh_t of every step
  at::Tensor mall = at::empty({T, B, H}, x.options());  // m_t of every step (for dW_hr)
  at::Tensor dhb = at::empty({2, B, P}, x.options());   // dL/dh, double-buffered by step parity
  at::Tensor dc = gcn.clone();
  dhb.select(0, 0).copy_(ghn);
  const S* hb = hbuf.data_ptr<S>();
  const S* cb = cbuf.data_ptr<S>();
  const S* gb = gates.data_ptr<S>();
  const S* gyb = gy.data_ptr<S>();
  const S* whh = w_hh.data_ptr<S>();
  S* dab = da.data_ptr<S>();
  S* dhsb = dhs.data_ptr<S>();
  S* mb = mall.data_ptr<S>();
  S* dh = dhb.data_ptr<S>();
  S* dcb = dc.data_ptr<S>();
  const int64_t* lens = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  auto step_at = [&](int64_t kk) { return reverse ? kk : T - 1 - kk; };
  // dh += dy_t on the rows valid at t, and dH_t = dh there (0 elsewhere), columns [p0, p1)
  auto take_gy = [&](S* d, int64_t t, int64_t p0, int64_t p1) {
    for (int64_t b = 0; b < B; ++b) {
      S* __restrict o = dhsb + t * B * P + b * P;
      if (lens && t >= lens[b]) {
        std::fill(o + p0, o + p1, S(0));
        continue;
      }
      S* __restrict r = d + b * P;
      const S* __restrict g = gyb + t * B * P + b * P;
      for (int64_t j = p0; j < p1; ++j) o[j] = r[j] += g[j];
    }
  };
  if (T > 0) take_gy(dh, step_at(0), 0, P);
  std::vector<ProjShard<S>> shards = proj_shards<S>(w_hh, w_hr, B, T, false);
  const ProjRows<S> bwd = SEQLAB_ISA(proj_bwd<S>);
  {  // per-step products on one BLAS thread when small (not the GEMMs after the loop)
    BlasThreads small(B * G * P);
    // two phases per step: (0) dm = dh W_hr for the shard's units, their dA, dc, m;
    // (1) the shard's columns of dh_{t−1} = dA_t W_hh (reads every unit's dA), then dy_{t−1}
    run_team(static_cast<int64_t>(shards.size()), 2 * T, [&](int64_t q, int64_t sp) {
      ProjShard<S>& k = shards[q];
      const int64_t kk = sp / 2, t = step_at(kk);
      const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      S* dhp = dh + (kk % 2) * B * P;
      if (sp % 2 == 0) {
        const int64_t n = k.u1 - k.u0;
        S* dm = k.tmp.template data_ptr<S>();
        gemm_p<S>(*k.pw, false, B, n, P, dhp, P, w_hr.data_ptr<S>() + k.u0, H, false, dm, n);
        ProjStep<S> s;
        s.H = H, s.t = t, s.u0 = k.u0, s.u1 = k.u1, s.len = lens;
        s.g = const_cast<S*>(gb) + t * B * G, s.dm = dm, s.dc = dcb;
        s.cp = cb + prev * B * H, s.cc = const_cast<S*>(cb) + cur * B * H;
        s.m = mb + t * B * H, s.da = dab + t * B * G;
        bwd(s, 0, B);
        return;
      }
      const int64_t np = k.p1 - k.p0;
      if (np == 0) return;
      S* dhq = dh + ((kk + 1) % 2) * B * P;
      gemm_p<S>(*k.pw2, false, B, np, G, dab + t * B * G, G, whh + k.p0, P, false, dhq + k.p0, P);
      if (lens)  // padded rows pass dh on unchanged
        for (int64_t b = 0; b < B; ++b)
          if (t >= lens[b]) put_cols(dhq, dhp, b, P, k.p0, k.p1);
      if (kk + 1 < T) take_gy(dhq, step_at(kk + 1), k.p0, k.p1);
    });
  }
  at::Tensor dh0 = dhb.select(0, T % 2).clone();
  const at::Tensor da2 = da.view({T * B, G});
  const at::Tensor hprev = hbuf.narrow(0, reverse ? 1 : 0, T).reshape({T * B, P});
  at::Tensor dx = at::mm(da2, w_ih).view({T, B, I});
  at::Tensor dw_ih = at::mm(da2.t(), x.view({T * B, I}));
  at::Tensor dw_hh = at::mm(da2.t(), hprev);
  at::Tensor dw_hr = at::mm(dhs.view({T * B, P}).t(), mall.view({T * B, H}));
  at::Tensor db = at::sum(da2, 0), none = at::empty({0}, x.options());
  return {dx, dh0, dc, dw_ih, dw_hh, has_b_ih ? db : none, has_b_hh ? db.clone() : none, dw_hr};
}

// ---- argument checks (the ops are reachable directly; see checks.h)

inline void check_proj_weights(const char* op, const at::Tensor& x, int64_t H, int64_t P,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const at::Tensor& w_hr) {
  check_like(op, "w_ih", w_ih, {4 * H, x.size(2)}, x, "(4·H, I)");
  check_like(op, "w_hh", w_hh, {4 * H, P}, x, "(4·H, P): the recurrent product reads h (B, P)");
  check_like(op, "w_hr", w_hr, {P, H}, x, "(P, H): the projection h = m W_hrᵀ");
}

inline int64_t check_width(const char* op, const char* name, const at::Tensor& t, int64_t dim,
                           const char* want) {
  TORCH_CHECK(t.defined() && t.dim() == dim, op, ": ", name, ": expected shape ", want,
              ", got ", t.defined() ? shape_str(t.sizes()) : std::string("None"));
  return t.size(dim - 1);
}

inline void check_proj_forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const at::Tensor& b_ih, const at::Tensor& b_hh,
                               const at::Tensor& w_hr, const at::Tensor& len) {
  const char* op = "seqlab_engine.proj_forward";
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1);
  const int64_t P = check_width(op, "h0", h0, 2, "(B, P)");
  const int64_t H = check_width(op, "c0", c0, 2, "(B, H)");
  check_like(op, "h0", h0, {B, P}, x, "(B, P)");
  check_like(op, "c0", c0, {B, H}, x, "(B, H)");
  check_proj_weights(op, x, H, P, w_ih, w_hh, w_hr);
  if (b_ih.defined()) check_like(op, "b_ih", b_ih, {4 * H}, x, "(4·H,)");
  if (b_hh.defined()) check_like(op, "b_hh", b_hh, {4 * H}, x, "(4·H,)");
  check_lengths(op, len, T, B);
}

inline void check_proj_backward(const at::Tensor& x, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const at::Tensor& w_hr,
                                const at::Tensor& len, const at::Tensor& hbuf,
                                const at::Tensor& cbuf, const at::Tensor& gates,
                                const at::Tensor& gy, const at::Tensor& ghn,
                                const at::Tensor& gcn) {
  const char* op = "seqlab_engine.proj_backward";
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1);
  const std::string saved = "as returned by proj_forward";
  const int64_t P = check_width(op, "hbuf", hbuf, 3, "(T + 1, B, P)");
  const int64_t H = check_width(op, "cbuf", cbuf, 3, "(T + 1, B, H)");
  check_like(op, "hbuf", hbuf, {T + 1, B, P}, x, "(T + 1, B, P) " + saved);
  check_like(op, "cbuf", cbuf, {T + 1, B, H}, x, "(T + 1, B, H) " + saved);
  check_like(op, "gates", gates, {T, B, 4 * H}, x, "(T, B, 4·H) " + saved);
  check_proj_weights(op, x, H, P, w_ih, w_hh, w_hr);
  check_like(op, "gy", gy, {T, B, P}, x, "(T, B, P) like the output y", true);
  check_like(op, "ghn", ghn, {B, P}, x, "(B, P) like h_n", true);
  check_like(op, "gcn", gcn, {B, H}, x, "(B, H) like c_n", true);
  check_lengths(op, len, T, B);
}

// ---- the ops

std::vector<at::Tensor> proj_forward(const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh,
                                     const std::optional<at::Tensor>& b_ih,
                                     const std::optional<at::Tensor>& b_hh,
                                     const at::Tensor& w_hr,
                                     const std::optional<at::Tensor>& lengths, bool reverse,
                                     bool save) {
  (void)save;  // every buffer is also a working buffer of the forward loop
  check_proj_forward(x, h0, c0, w_ih, w_hh, opt(b_ih), opt(b_hh), w_hr, opt(lengths));
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_proj_forward", [&] {
    return proj_forward_impl<scalar_t>(x, h0, c0, w_ih, w_hh, opt(b_ih), opt(b_hh), w_hr,
                                       opt(lengths), reverse);
  });
}

std::vector<at::Tensor> proj_backward(const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& w_hr,
                                      bool has_b_ih, bool has_b_hh,
                                      const std::optional<at::Tensor>& lengths, bool reverse,
                                      const at::Tensor& hbuf, const at::Tensor& cbuf,
                                      const at::Tensor& gates, const at::Tensor& gy,
                                      const at::Tensor& ghn, const at::Tensor& gcn) {
  check_proj_backward(x, w_ih, w_hh, w_hr, opt(lengths), hbuf, cbuf, gates, gy, ghn, gcn);
  return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqlab_proj_backward", [&] {
    return proj_backward_impl<scalar_t>(x, w_ih, w_hh, w_hr, has_b_ih, has_b_hh, opt(lengths),
                                        reverse, hbuf, cbuf, gates, gy, ghn.contiguous(),
                                        gcn.contiguous());
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(seqlab_engine, m) {
  m.def("proj_forward", &proj_forward);
  m.def("proj_backward", &proj_backward);
}
