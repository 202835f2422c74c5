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
// The projection makes h_t depend on every unit of m_t, so a step is three dependent phases;
// here they run one after the other on the calling thread (the row kernels split over batch
// rows when there are threads and work enough), the per-step products on the packed/panel
// GEMMs of gemm.h. The input projection is one GEMM before the loop; dx, dW_ih, dW_hh, the
// bias gradient and dW_hr = Σ_t dh_tᵀ m_t are single GEMMs over all T·B rows after it.

template <typename S>
struct ProjStep {
  int64_t H = 0, t = 0;
  const int64_t* len = nullptr;  // valid steps per batch row, or null (all valid)
  S* g = nullptr;         // (B, 4H) forward: pre-activations in, activated gates out; bwd: saved
  const S* cp = nullptr;  // c_{t−1} (B, H)
  S* cc = nullptr;        // c_t (B, H): written by the forward, read by the backward
  S* m = nullptr;         // out: m_t = o ⊙ tanh c_t (B, H), 0 on padded rows
  const S* dm = nullptr;  // backward: dh W_hr (B, H)
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

// the row kernel over all B rows: split over threads only when a step has work enough to pay
// for waking them (~B·H ≥ 32 Ki units)
template <typename S>
inline void proj_rows(ProjRows<S> fn, const ProjStep<S>& s, int64_t B) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(s.H, 1));
  if (B <= grain || at::get_num_threads() < 2) {
    fn(s, 0, B);
    return;
  }
  at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) { fn(s, b0, b1); });
}

// row b of a (B, N) matrix: copy from `src`, or zero (src null)
template <typename S>
inline void put_row(S* dst, const S* src, int64_t b, int64_t N) {
  if (src)
    std::memcpy(dst + b * N, src + b * N, sizeof(S) * N);
  else
    std::fill_n(dst + b * N, N, S(0));
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
  S* yb = len.defined() ? y.data_ptr<S>() : nullptr;
  const S* whh = w_hh.data_ptr<S>();
  const S* whr = w_hr.data_ptr<S>();
  ProjStep<S> s;
  s.H = H;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.m = mbuf.data_ptr<S>();
  {
    BlasThreads small(B * G * P);
    PackedW<S> pw_hh(true, B, G, P, whh, P, true, T * B);
    PackedW<S> pw_hr(true, B, P, H, whr, H, true, T * B);
    const ProjRows<S> fwd = SEQLAB_ISA(proj_fwd<S>);
    for (int64_t k = 0; k < T; ++k) {
      const int64_t t = reverse ? T - 1 - k : k;
      const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      const S* hp = hb + prev * B * P;
      S* hc = hb + cur * B * P;
      s.t = t;
      s.g = gb + t * B * G;
      s.cp = cb + prev * B * H;
      s.cc = cb + cur * B * H;
      gemm_p<S>(pw_hh, true, B, G, P, hp, P, whh, P, true, s.g, G);
      proj_rows<S>(fwd, s, B);
      gemm_p<S>(pw_hr, true, B, P, H, s.m, H, whr, H, false, hc, P);
      if (s.len) {  // padded rows carry h and output 0
        for (int64_t b = 0; b < B; ++b) {
          const bool ok = s.valid(b);
          if (!ok) put_row(hc, hp, b, P);
          put_row(yb + t * B * P, ok ? hc : nullptr, b, P);
        }
      }
    }
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
  at::Tensor dh = ghn.clone(), dh2 = at::empty({B, P}, x.options());
  at::Tensor dc = gcn.clone(), dm = at::empty({B, H}, x.options());
  const S* hb = hbuf.data_ptr<S>();
  const S* cb = cbuf.data_ptr<S>();
  const S* gyb = gy.data_ptr<S>();
  const S* whh = w_hh.data_ptr<S>();
  const S* whr = w_hr.data_ptr<S>();
  S* dab = da.data_ptr<S>();
  S* dhsb = dhs.data_ptr<S>();
  S* mb = mall.data_ptr<S>();
  S* dhp = dh.data_ptr<S>();
  S* dhq = dh2.data_ptr<S>();
  ProjStep<S> s;
  s.H = H;
  s.len = len.defined() ? len.data_ptr<int64_t>() : nullptr;
  s.dm = dm.data_ptr<S>();
  s.dc = dc.data_ptr<S>();
  {
    BlasThreads small(B * G * P);
    PackedW<S> pw_hr(false, B, H, P, whr, H, true, T * B);
    PackedW<S> pw_hh(false, B, P, G, whh, P, true, T * B);
    const ProjRows<S> bwd = SEQLAB_ISA(proj_bwd<S>);
    for (int64_t k = 0; k < T; ++k) {
      const int64_t t = reverse ? k : T - 1 - k;
      const int64_t prev = reverse ? t + 1 : t, cur = reverse ? t : t + 1;
      const S* gyt = gyb + t * B * P;
      S* dht = dhsb + t * B * P;
      s.t = t;
      for (int64_t b = 0; b < B; ++b) {  // dh += dy_t on valid rows; dH_t = dh there, else 0
        S* __restrict d = dhp + b * P;
        S* __restrict o = dht + b * P;
        if (!s.valid(b)) {
          std::fill_n(o, P, S(0));
          continue;
        }
        const S* __restrict g = gyt + b * P;
        for (int64_t j = 0; j < P; ++j) o[j] = d[j] += g[j];
      }
      s.g = const_cast<S*>(gates.data_ptr<S>()) + t * B * G;
      s.cp = cb + prev * B * H;
      s.cc = const_cast<S*>(cb) + cur * B * H;
      s.m = mb + t * B * H;
      s.da = dab + t * B * G;
      gemm_p<S>(pw_hr, false, B, H, P, dhp, P, whr, H, false, const_cast<S*>(s.dm), H);
      proj_rows<S>(bwd, s, B);
      gemm_p<S>(pw_hh, false, B, P, G, s.da, G, whh, P, false, dhq, P);
      if (s.len)  // padded rows pass dh on unchanged
        for (int64_t b = 0; b < B; ++b)
          if (!s.valid(b)) put_row(dhq, dhp, b, P);
      std::swap(dhp, dhq);
    }
  }
  // the gradient reaching h0 is in whichever buffer the last swap left current
  at::Tensor dh0 = dhp == dh.data_ptr<S>() ? dh : dh2;
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
