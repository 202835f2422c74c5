// Row kernels of the LayerNorm LSTM / GRU time loops (layernorm_cells.h), for the hidden
// units [u0, u0+n) of one shard and all B batch rows.
//
// Included three times by layernorm_cells.h, like kernels.h: in namespace seqlab_base, in
// seqlab_avx2 under `#pragma GCC target("avx2,fma")` and in seqlab_avx512 under the AVX-512
// target, so it reuses that namespace's v_sigmoid / v_tanh / carry_units / put_units. Plain
// C++ only.
//
// Layouts: "global" buffers are (B, G·H) gate-major rows (column k·H + u), shard-local ones
// (B, G·n) (column k·n + j). Statistics st: [0, B) the first, [B, 2B) the second number of
// each row (fwd: mean, rstd; bwd: the two means of the LN backward). A layer normalisation
// x̂ = (a − μ)·rstd, y = γ ⊙ x̂ + β has the backward
//   da = rstd · (dy⊙γ − mean(dy⊙γ) − x̂ ⊙ mean(dy⊙γ⊙x̂)),
// whose two means are sums over all G·H (or H) columns of a row: per shard partial sums,
// added up by the team (the `part` arrays, (B, 2) per shard).

#define LN_COLS _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j)

// Pull `blocks` runs of n elements (`bs` apart) towards L1 for reading (RW 0) or writing (1):
// the kernels call it for the next batch row's cold rows (saved buffers, per-step outputs),
// whose short runs (n units of each gate block) the hardware prefetchers pick up too late.
template <int RW, typename S>
static inline void ln_pf(const S* p, int64_t blocks, int64_t bs, int64_t n) {
  constexpr int64_t line = 64 / sizeof(S);
  for (int64_t q = 0; q < blocks; ++q)
    for (int64_t j = 0; j < n; j += line) __builtin_prefetch(p + q * bs + j, RW, 3);
}

// mean and sum of squared deviations of a[0, n): two passes (no E[a²] − E[a]² cancellation),
// vectorised partial sums in S (a shard's columns; the shards are combined in double)
template <typename S>
static inline void ln_moments(const S* __restrict a, int64_t n, double* out) {
  S sum = S(0);
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += a[j];
  const S m = n > 0 ? sum / S(n) : S(0);
  S q = S(0);
#pragma omp simd reduction(+ : q)
  for (int64_t j = 0; j < n; ++j) {
    const S d = a[j] - m;
    q += d * d;
  }
  out[0] = m;
  out[1] = q;
}

// rows [r0, r1) of a (R, N) matrix normalised in place (x̂), rstd of row r to rs[r·K]
template <typename S>
void ln_rows(S* a, int64_t r0, int64_t r1, int64_t N, S* rs, int64_t K, double eps) {
  for (int64_t r = r0; r < r1; ++r) {
    S* __restrict row = a + r * N;
    double m[2];
    ln_moments(row, N, m);
    const double var = N > 0 ? m[1] / static_cast<double>(N) : 0.0;
    const S mu = static_cast<S>(m[0]), rsd = static_cast<S>(1.0 / std::sqrt(var + eps));
    rs[r * K] = rsd;
    const int64_t n = N;
    LN_COLS row[j] = (row[j] - mu) * rsd;
  }
}

// the LN backward of rows [r0, r1), in place: d ← rstd·(d⊙γ − mean(d⊙γ) − x̂⊙mean(d⊙γ⊙x̂));
// first adds d⊙x̂ and d to acc[0, N) and acc[N, 2N) (dγ and the shift's gradient)
template <typename S>
void ln_bwd_rows(S* d, const S* xh, const S* gamma, const S* rs, int64_t K, int64_t r0,
                 int64_t r1, int64_t N, S* acc) {
  const int64_t n = N;
  for (int64_t r = r0; r < r1; ++r) {
    S* __restrict dr = d + r * N;
    const S* __restrict x = xh + r * N;
    const S* __restrict ga = gamma;
    S* __restrict ag = acc;
    S* __restrict ab = acc + N;
    S s1 = S(0), s2 = S(0);
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < n; ++j) {
      ag[j] += dr[j] * x[j];
      ab[j] += dr[j];
      const S v = dr[j] * ga[j];
      s1 += v;
      s2 += v * x[j];
    }
    const S m1 = s1 / S(N), m2 = s2 / S(N), rsd = rs[r * K];
    LN_COLS dr[j] = rsd * (dr[j] * ga[j] - m1 - x[j] * m2);
  }
}

// partial moments of each row of a shard-local (B, N) block
template <typename S>
void ln_part_moments(const S* a, int64_t B, int64_t N, double* part) {
  for (int64_t b = 0; b < B; ++b) ln_moments(a + b * N, N, part + 2 * b);
}

// ---------------------------------------------------------------- forward
// LN-LSTM, after the recurrent product's statistics are known: x̂_hh, the gates and c.
//   a = γ_ih⊙x̂_ih + γ_hh⊙x̂_hh + (b_ih + b_hh);  c = f⊙c_prev + i⊙g
// then the partial moments of c over this shard's units.
template <typename S>
void lnlstm_fwd_gates(const LnFwd<S>& s) {
  const int64_t H = s.H, n = s.n, GH = 4 * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    const int64_t o = b * H + u;
    if (b + 1 < s.bn) {  // the next row's x̂_ih, and where its x̂_hh, gates and c go
      ln_pf<0>(s.xih + (b + 1) * GH + u, 4, H, n);
      ln_pf<1>(s.xhh + (b + 1) * GH + u, 4, H, n);
      ln_pf<1>(s.g + (b + 1) * s.gs + u, 4, H, n);
      ln_pf<1>(s.cc + o + H, 1, 0, n);
    }
    const S* __restrict cp = s.cp + o;
    S* __restrict cc = s.cc + o;
    if (!s.valid(b)) {
      LN_COLS cc[j] = cp[j];
    } else {
      const S mu = s.st[b], rs = s.st[s.B + b];
      const S* __restrict r = s.rec + b * 4 * n;
      const S* __restrict xi = s.xih + b * GH + u;
      const S* __restrict gi = s.gih + u;
      const S* __restrict gh = s.ghh + u;
      const S* __restrict bi = s.bias + u;
      S* __restrict xh = s.xhh + b * GH + u;
      S* __restrict g = s.g + b * s.gs + u;
      LN_COLS {
        const S x0 = (r[j] - mu) * rs, x1 = (r[n + j] - mu) * rs;
        const S x2 = (r[2 * n + j] - mu) * rs, x3 = (r[3 * n + j] - mu) * rs;
        xh[j] = x0; xh[H + j] = x1; xh[2 * H + j] = x2; xh[3 * H + j] = x3;
        const S i = v_sigmoid(gi[j] * xi[j] + gh[j] * x0 + bi[j]);
        const S f = v_sigmoid(gi[H + j] * xi[H + j] + gh[H + j] * x1 + bi[H + j]);
        const S gg = v_tanh(gi[2 * H + j] * xi[2 * H + j] + gh[2 * H + j] * x2 + bi[2 * H + j]);
        const S og = v_sigmoid(gi[3 * H + j] * xi[3 * H + j] + gh[3 * H + j] * x3 + bi[3 * H + j]);
        g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = og;
        cc[j] = f * cp[j] + i * gg;
      }
    }
    ln_moments(cc, n, s.part + 2 * b);
  }
}

// LN-LSTM, after c's statistics: ĉ and h = o⊙tanh(γ_c⊙ĉ + β_c)
template <typename S>
void lnlstm_fwd_out(const LnFwd<S>& s) {
  const int64_t H = s.H, n = s.n, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    const int64_t o = b * H + u;
    if (!s.valid(b)) {
      carry_units<S>(n, s.hp + o, s.hc + o, nullptr, nullptr, s.y ? s.y + o : nullptr);
      continue;
    }
    if (b + 1 < s.bn) {
      ln_pf<1>(s.ch + o + H, 1, 0, n);
      ln_pf<1>(s.hc + o + H, 1, 0, n);
    }
    const S mu = s.st[b], rs = s.st[s.B + b];
    const S* __restrict cc = s.cc + o;
    const S* __restrict og = s.g + b * s.gs + 3 * H + u;
    const S* __restrict gc = s.gc + u;
    const S* __restrict bc = s.bc + u;
    S* __restrict ch = s.ch + o;
    S* __restrict hc = s.hc + o;
    LN_COLS {
      const S c = (cc[j] - mu) * rs;
      ch[j] = c;
      hc[j] = og[j] * v_tanh(gc[j] * c + bc[j]);
    }
    if (s.y) put_units<S>(n, hc, s.y + o);
  }
}

// LN-GRU, after the recurrent product's statistics: hw = γ_hh⊙x̂_hh + b_hh,
//   r = σ(xw_r + hw_r), z = σ(xw_z + hw_z), n = tanh(xw_n + r⊙hw_n), h = n + z⊙(h_prev − n)
// with xw = γ_ih⊙x̂_ih + b_ih (bias: b_ih + [b_hr b_hz 0]; bhn: b_hn); saves [r z n hw_n].
template <typename S>
void lngru_fwd(const LnFwd<S>& s) {
  const int64_t H = s.H, n = s.n, GH = 3 * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    const int64_t o = b * H + u;
    if (!s.valid(b)) {
      carry_units<S>(n, s.hp + o, s.hc + o, nullptr, nullptr, s.y ? s.y + o : nullptr);
      continue;
    }
    if (b + 1 < s.bn) {
      ln_pf<0>(s.xih + (b + 1) * GH + u, 3, H, n);
      ln_pf<1>(s.xhh + (b + 1) * GH + u, 3, H, n);
      ln_pf<1>(s.g + (b + 1) * s.gs + u, 4, H, n);
      ln_pf<1>(s.hc + o + H, 1, 0, n);
    }
    const S mu = s.st[b], rs = s.st[s.B + b];
    const S* __restrict r = s.rec + b * 3 * n;
    const S* __restrict xi = s.xih + b * GH + u;
    const S* __restrict gi = s.gih + u;
    const S* __restrict gh = s.ghh + u;
    const S* __restrict bi = s.bias + u;
    const S* __restrict bhn = s.bhn + u;
    const S* __restrict hp = s.hp + o;
    S* __restrict xh = s.xhh + b * GH + u;
    S* __restrict g = s.g + b * s.gs + u;
    S* __restrict hc = s.hc + o;
    LN_COLS {
      const S x0 = (r[j] - mu) * rs, x1 = (r[n + j] - mu) * rs, x2 = (r[2 * n + j] - mu) * rs;
      xh[j] = x0; xh[H + j] = x1; xh[2 * H + j] = x2;
      const S rr = v_sigmoid(gi[j] * xi[j] + bi[j] + gh[j] * x0);
      const S z = v_sigmoid(gi[H + j] * xi[H + j] + bi[H + j] + gh[H + j] * x1);
      const S hn = gh[2 * H + j] * x2 + bhn[j];
      const S nn = v_tanh(gi[2 * H + j] * xi[2 * H + j] + bi[2 * H + j] + rr * hn);
      g[j] = rr; g[H + j] = z; g[2 * H + j] = nn; g[3 * H + j] = hn;
      hc[j] = nn + z * (hp[j] - nn);
    }
    if (s.y) put_units<S>(n, hc, s.y + o);
  }
}

// ---------------------------------------------------------------- backward
// A padded row: dA and the shard-local rows are zero, dh passes to h_prev (dc stays).
template <typename S>
static void ln_bwd_pad(const LnBwd<S>& s, int64_t b, int64_t G, bool carry_dh) {
  const int64_t H = s.H, n = s.n, u = s.u0, o = b * H + u;
  for (int64_t k = 0; k < G; ++k) {
    S* __restrict da = s.da + b * G * H + k * H + u;
    LN_COLS da[j] = S(0);
  }
  S* __restrict drl = s.drl + b * G * n;
  for (int64_t j = 0; j < G * n; ++j) drl[j] = S(0);
  if (carry_dh) {
    S* __restrict dhd = s.dhd + o;
    const S* __restrict dsum = s.dsum + o;
    LN_COLS dhd[j] = dsum[j];
  }
  s.part[2 * b] = 0.0;
  s.part[2 * b + 1] = 0.0;
}

// LN-LSTM phase 1: dh = dsum + gy; with u = γ_c⊙ĉ + β_c: dA_o = dh⊙tanh(u)⊙o(1−o),
// du = dh⊙o⊙(1 − tanh²u), dγ_c += du⊙ĉ, dβ_c += du; dĉ = du⊙γ_c (kept in s.du); partial
// sums of dĉ and dĉ⊙ĉ for the cell LN's backward.
template <typename S>
void lnlstm_bwd_cell(const LnBwd<S>& s) {
  const int64_t H = s.H, n = s.n, GH = 4 * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    const int64_t o = b * H + u;
    if (!s.valid(b)) {
      ln_bwd_pad(s, b, 4, true);
      continue;
    }
    if (b + 1 < s.bn) {
      ln_pf<0>(s.ch + o + H, 1, 0, n);
      ln_pf<0>(s.g + (b + 1) * s.gs + 3 * H + u, 1, 0, n);
      ln_pf<1>(s.da + (b + 1) * GH + 3 * H + u, 1, 0, n);
    }
    const S* __restrict dsum = s.dsum + o;
    const S* __restrict gy = s.gy + b * s.gys + u;
    const S* __restrict ch = s.ch + o;
    const S* __restrict og = s.g + b * s.gs + 3 * H + u;
    const S* __restrict gc = s.gc + u;
    const S* __restrict bc = s.bc + u;
    S* __restrict du = s.du + o;
    S* __restrict dao = s.da + b * GH + 3 * H + u;
    S* __restrict agc = s.acc_gc + u;
    S* __restrict abc = s.acc_bc + u;
    S* __restrict dhd = s.dhd + o;
    S s1 = S(0), s2 = S(0);
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < n; ++j) {
      const S dh = dsum[j] + gy[j], c = ch[j], ov = og[j];
      const S tu = v_tanh(gc[j] * c + bc[j]);
      dao[j] = dh * tu * ov * (S(1) - ov);
      const S d = dh * ov * (S(1) - tu * tu);
      agc[j] += d * c;
      abc[j] += d;
      dhd[j] = S(0);
      const S dc_hat = d * gc[j];
      du[j] = dc_hat;
      s1 += dc_hat;
      s2 += dc_hat * c;
    }
    s.part[2 * b] = s1;
    s.part[2 * b + 1] = s2;
  }
}

// LN-LSTM phase 2 (st: the cell LN's two means over H): dc_t = dc + rstd_c·(dĉ − m1 − ĉ·m2),
// dA_i, dA_f, dA_g, dc ← dc_t⊙f; the recurrent LN's dy = dA (kept ⊙γ_hh in drl),
// dγ_hh += dA⊙x̂_hh (db_hh = Σ dA = db_ih, after the loop); partial sums for the recurrent LN's backward.
template <typename S>
void lnlstm_bwd_gates(const LnBwd<S>& s) {
  const int64_t H = s.H, n = s.n, GH = 4 * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    if (!s.valid(b)) {
      ln_bwd_pad(s, b, 4, false);
      continue;
    }
    const int64_t o = b * H + u;
    if (b + 1 < s.bn) {
      ln_pf<0>(s.g + (b + 1) * s.gs + u, 3, H, n);
      ln_pf<0>(s.cp + o + H, 1, 0, n);
      ln_pf<0>(s.xhh + (b + 1) * GH + u, 4, H, n);
      ln_pf<1>(s.da + (b + 1) * GH + u, 3, H, n);
      ln_pf<1>(s.drl + (b + 1) * 4 * n, 1, 0, 4 * n);
    }
    const S m1 = s.st[b], m2 = s.st[s.B + b], rc = s.rs[b * s.K + 2];
    const S* __restrict g = s.g + b * s.gs + u;
    const S* __restrict cp = s.cp + o;
    const S* __restrict ch = s.ch + o;
    const S* __restrict du = s.du + o;  // dĉ
    const S* __restrict xh = s.xhh + b * GH + u;
    const S* __restrict gh = s.ghh + u;
    S* __restrict dc = s.dc + o;
    S* __restrict da = s.da + b * GH + u;
    S* __restrict drl = s.drl + b * 4 * n;
    S* __restrict agh = s.acc_ghh + u;
    S s1 = S(0), s2 = S(0);
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < n; ++j) {
      const S dct = dc[j] + rc * (du[j] - m1 - ch[j] * m2);
      const S i = g[j], f = g[H + j], gg = g[2 * H + j];
      const S d0 = dct * gg * i * (S(1) - i), d1 = dct * cp[j] * f * (S(1) - f);
      const S d2 = dct * i * (S(1) - gg * gg), d3 = da[3 * H + j];
      dc[j] = dct * f;
      da[j] = d0; da[H + j] = d1; da[2 * H + j] = d2;
      const S x0 = xh[j], x1 = xh[H + j], x2 = xh[2 * H + j], x3 = xh[3 * H + j];
      agh[j] += d0 * x0; agh[H + j] += d1 * x1; agh[2 * H + j] += d2 * x2; agh[3 * H + j] += d3 * x3;
      const S y0 = d0 * gh[j], y1 = d1 * gh[H + j], y2 = d2 * gh[2 * H + j], y3 = d3 * gh[3 * H + j];
      drl[j] = y0; drl[n + j] = y1; drl[2 * n + j] = y2; drl[3 * n + j] = y3;
      s1 += (y0 + y1) + (y2 + y3);
      s2 += (y0 * x0 + y1 * x1) + (y2 * x2 + y3 * x3);
    }
    s.part[2 * b] = s1;
    s.part[2 * b + 1] = s2;
  }
}

// LN-GRU phase 1: dh = dsum + gy; dA_n = dh(1−z)(1−n²), dA_r = dA_n·hw_n·r(1−r),
// dA_z = dh(h_prev − n)z(1−z) (the input side, da); the recurrent side d(hw) =
// [dA_r, dA_z, dA_n⊙r] (dγ_hh, db_hh, and ⊙γ_hh in drl); the direct dh_prev = dh⊙z.
template <typename S>
void lngru_bwd_gates(const LnBwd<S>& s) {
  const int64_t H = s.H, n = s.n, GH = 3 * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    if (!s.valid(b)) {
      ln_bwd_pad(s, b, 3, true);
      continue;
    }
    const int64_t o = b * H + u;
    if (b + 1 < s.bn) {
      ln_pf<0>(s.g + (b + 1) * s.gs + u, 4, H, n);
      ln_pf<0>(s.hp + o + H, 1, 0, n);
      ln_pf<0>(s.xhh + (b + 1) * GH + u, 3, H, n);
      ln_pf<1>(s.da + (b + 1) * GH + u, 3, H, n);
      ln_pf<1>(s.drl + (b + 1) * 3 * n, 1, 0, 3 * n);
    }
    const S* __restrict dsum = s.dsum + o;
    const S* __restrict gy = s.gy + b * s.gys + u;
    const S* __restrict g = s.g + b * s.gs + u;
    const S* __restrict hp = s.hp + o;
    const S* __restrict xh = s.xhh + b * GH + u;
    const S* __restrict gh = s.ghh + u;
    S* __restrict da = s.da + b * GH + u;
    S* __restrict drl = s.drl + b * 3 * n;
    S* __restrict agh = s.acc_ghh + u;
    S* __restrict abh = s.acc_bhh + u;
    S* __restrict dhd = s.dhd + o;
    S s1 = S(0), s2 = S(0);
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < n; ++j) {
      const S dh = dsum[j] + gy[j];
      const S r = g[j], z = g[H + j], nn = g[2 * H + j], hn = g[3 * H + j];
      const S dan = dh * (S(1) - z) * (S(1) - nn * nn);
      const S dar = dan * hn * r * (S(1) - r);
      const S daz = dh * (hp[j] - nn) * z * (S(1) - z);
      const S e2 = dan * r;
      da[j] = dar; da[H + j] = daz; da[2 * H + j] = dan;
      const S x0 = xh[j], x1 = xh[H + j], x2 = xh[2 * H + j];
      agh[j] += dar * x0; agh[H + j] += daz * x1; agh[2 * H + j] += e2 * x2;
      abh[j] += dar; abh[H + j] += daz; abh[2 * H + j] += e2;
      const S y0 = dar * gh[j], y1 = daz * gh[H + j], y2 = e2 * gh[2 * H + j];
      drl[j] = y0; drl[n + j] = y1; drl[2 * n + j] = y2;
      s1 += y0 + y1 + y2;
      s2 += y0 * x0 + y1 * x1 + y2 * x2;
      dhd[j] = dh * z;
    }
    s.part[2 * b] = s1;
    s.part[2 * b + 1] = s2;
  }
}

// Both cells, last phase (st: the recurrent LN's two means over G·H): drl ← dL/d(h_prev W_hhᵀ)
// = rstd_hh·(drl − m1 − x̂_hh·m2), also written to the global dr (for dW_hh after the loop)
// unless drl is dr itself (one shard: the layouts agree).
template <typename S>
void ln_bwd_rec(const LnBwd<S>& s, int64_t G) {
  const int64_t H = s.H, n = s.n, GH = G * H, u = s.u0;
  for (int64_t b = s.b0; b < s.b1; ++b) {
    if (!s.valid(b)) {  // drl is already zero
      for (int64_t k = 0; k < G && s.dr != s.drl; ++k) {
        S* __restrict dr = s.dr + b * GH + k * H + u;
        LN_COLS dr[j] = S(0);
      }
      continue;
    }
    const S m1 = s.st[b], m2 = s.st[s.B + b], rh = s.rs[b * s.K + 1];
    for (int64_t k = 0; k < G; ++k) {
      S* __restrict drl = s.drl + b * G * n + k * n;
      const S* __restrict xh = s.xhh + b * GH + k * H + u;
      LN_COLS drl[j] = rh * (drl[j] - m1 - xh[j] * m2);
      if (s.dr != s.drl) {  // a shard of the team: its block into the global rows too
        S* __restrict dr = s.dr + b * GH + k * H + u;
        LN_COLS dr[j] = drl[j];
      }
    }
  }
}

#undef LN_COLS
