// minGRU/minLSTM row kernels: one batch row, n consecutive units, one step (see minimal.h).
//
// Included twice by minimal.h, inside seqlab_base::mrows and seqlab_avx2::mrows (the latter
// under the avx2/fma target pragma), so the loops auto-vectorise per ISA as kernels.h's do and
// reuse its v_exp/v_sigmoid (libm in double; branch-free polynomials in float, whose inputs
// clamp at ±87: float32 gates saturate at e^−87 instead of underflowing further).
// Plain C++ only, as kernels.h.
//
// xw arrives without its bias: each kernel adds the bias blocks (bk, bu, ...) itself, which
// saves the separate broadcast pass of an addmm. Three kinds per cell:
//   *_fwd_row   h = a h + b, written out                          (a step of the forward)
//   *_fwd_agg   h = a h + b and p = a p, nothing written          (a chunk's aggregate)
//   *_bwd_row   ĝ = g + c, dxw written, db accumulated, g ← a ĝ  (a step of the backward)
//   *_bwd_agg   g ← a (g + c) and p = a p, nothing written        (a chunk's aggregate)

#ifndef MR_LOOP
#define MR_LOOP _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j)
#endif

// σ(k) and σ(−k) from one exp, without overflow for either sign of k
template <typename S>
static inline void mr_sig_pair(S k, S& pos, S& neg) {
  const S e = v_exp(k < S(0) ? k : -k);
  const S p = S(1) / (S(1) + e), q = e * p;
  pos = k >= S(0) ? p : q;
  neg = k >= S(0) ? q : p;
}

// the candidate g(ĥ) = ĥ + 0.5 for ĥ ≥ 0, σ(ĥ) otherwise, and its derivative
template <typename S>
static inline S mr_g(S u) {
  const S s = v_sigmoid(u);
  return u >= S(0) ? u + S(0.5) : s;
}

template <typename S>
static inline void mr_g_dg(S u, S& gv, S& dg) {
  const S s = v_sigmoid(u);
  gv = u >= S(0) ? u + S(0.5) : s;
  dg = u >= S(0) ? S(1) : s * (S(1) - s);
}

// minLSTM's normalised gates f' = f/(f+i), i' = i/(f+i) (and 1 − f, 1 − i for the backward).
// In double both gates can underflow to 0 (k_f, k_i < −745): there f' = σ(k_f − k_i).
template <typename S>
static inline void mr_lstm_gates(S kf, S ki, S& nf, S& ni, S& fn, S& in) {
  S f, i;
  mr_sig_pair(kf, f, nf);
  mr_sig_pair(ki, i, ni);
  const S sum = f + i;
  fn = f / sum;
  in = i / sum;
  if (std::is_same<S, double>::value && !(sum > S(0))) mr_sig_pair(kf - ki, fn, in);
}

// h = (1 − z) h + z g(ĥ), z = σ(k)
template <typename S>
static void mingru_fwd_row(int64_t n, const S* __restrict k, const S* __restrict u,
                           const S* __restrict bk, const S* __restrict bu, S* __restrict st,
                           S* __restrict out) {
  MR_LOOP {
    S z, nz;
    mr_sig_pair(k[j] + bk[j], z, nz);
    const S s = nz * st[j] + z * mr_g(u[j] + bu[j]);
    st[j] = s;
    out[j] = s;
  }
}

template <typename S>
static void mingru_fwd_agg(int64_t n, const S* __restrict k, const S* __restrict u,
                           const S* __restrict bk, const S* __restrict bu, S* __restrict st,
                           S* __restrict p) {
  MR_LOOP {
    S z, nz;
    mr_sig_pair(k[j] + bk[j], z, nz);
    st[j] = nz * st[j] + z * mr_g(u[j] + bu[j]);
    p[j] *= nz;
  }
}

// h = f' h + i' g(ĥ)
template <typename S>
static void minlstm_fwd_row(int64_t n, const S* __restrict kf, const S* __restrict ki,
                            const S* __restrict u, const S* __restrict bf,
                            const S* __restrict bi, const S* __restrict bu, S* __restrict st,
                            S* __restrict out) {
  MR_LOOP {
    S nf, ni, fn, in;
    mr_lstm_gates(kf[j] + bf[j], ki[j] + bi[j], nf, ni, fn, in);
    const S s = fn * st[j] + in * mr_g(u[j] + bu[j]);
    st[j] = s;
    out[j] = s;
  }
}

template <typename S>
static void minlstm_fwd_agg(int64_t n, const S* __restrict kf, const S* __restrict ki,
                            const S* __restrict u, const S* __restrict bf,
                            const S* __restrict bi, const S* __restrict bu, S* __restrict st,
                            S* __restrict p) {
  MR_LOOP {
    S nf, ni, fn, in;
    mr_lstm_gates(kf[j] + bf[j], ki[j] + bi[j], nf, ni, fn, in);
    st[j] = fn * st[j] + in * mr_g(u[j] + bu[j]);
    p[j] *= fn;
  }
}

// ĝ = g + c; δ = ĝ (g(ĥ) − h_prev); dk = δ z(1 − z); dĥ = ĝ z g'(ĥ); g ← (1 − z) ĝ;
// db += (dk, dĥ)
template <typename S>
static void mingru_bwd_row(int64_t n, const S* __restrict k, const S* __restrict u,
                           const S* __restrict bk, const S* __restrict bu,
                           const S* __restrict hp, const S* __restrict c, S* __restrict g,
                           S* __restrict dk, S* __restrict du, S* __restrict dbk,
                           S* __restrict dbu) {
  MR_LOOP {
    S z, nz, gv, dg;
    mr_sig_pair(k[j] + bk[j], z, nz);
    mr_g_dg(u[j] + bu[j], gv, dg);
    const S gt = g[j] + c[j];
    const S a = gt * (gv - hp[j]) * z * nz, b = gt * z * dg;
    dk[j] = a;
    du[j] = b;
    dbk[j] += a;
    dbu[j] += b;
    g[j] = nz * gt;
  }
}

template <typename S>
static void mingru_bwd_agg(int64_t n, const S* __restrict k, const S* __restrict bk,
                           const S* __restrict c, S* __restrict g, S* __restrict p) {
  MR_LOOP {
    S z, nz;
    mr_sig_pair(k[j] + bk[j], z, nz);
    g[j] = nz * (g[j] + c[j]);
    p[j] *= nz;
  }
}

// ∂d = δ f'i'; dk_f = −∂d (1 − f); dk_i = ∂d (1 − i); dĥ = ĝ i' g'(ĥ); g ← f' ĝ; db += …
template <typename S>
static void minlstm_bwd_row(int64_t n, const S* __restrict kf, const S* __restrict ki,
                            const S* __restrict u, const S* __restrict bf,
                            const S* __restrict bi, const S* __restrict bu,
                            const S* __restrict hp, const S* __restrict c, S* __restrict g,
                            S* __restrict dkf, S* __restrict dki, S* __restrict du,
                            S* __restrict dbf, S* __restrict dbi, S* __restrict dbu) {
  MR_LOOP {
    S nf, ni, fn, in, gv, dg;
    mr_lstm_gates(kf[j] + bf[j], ki[j] + bi[j], nf, ni, fn, in);
    mr_g_dg(u[j] + bu[j], gv, dg);
    const S gt = g[j] + c[j];
    const S dd = gt * (gv - hp[j]) * fn * in;
    const S a = -dd * nf, b = dd * ni, e = gt * in * dg;
    dkf[j] = a;
    dki[j] = b;
    du[j] = e;
    dbf[j] += a;
    dbi[j] += b;
    dbu[j] += e;
    g[j] = fn * gt;
  }
}

template <typename S>
static void minlstm_bwd_agg(int64_t n, const S* __restrict kf, const S* __restrict ki,
                            const S* __restrict bf, const S* __restrict bi,
                            const S* __restrict c, S* __restrict g, S* __restrict p) {
  MR_LOOP {
    S nf, ni, fn, in;
    mr_lstm_gates(kf[j] + bf[j], ki[j] + bi[j], nf, ni, fn, in);
    g[j] = fn * (g[j] + c[j]);
    p[j] *= fn;
  }
}
