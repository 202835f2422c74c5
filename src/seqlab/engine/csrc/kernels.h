// Fused pointwise passes of one time step, for a range of batch rows [b0, b1).
//
// Included twice by recurrence.cpp: once for the baseline ISA and once under
// `#pragma GCC target("avx2,fma")`, each time inside its own namespace, so the compiler
// auto-vectorises the same source for both and the caller picks one by CPUID at run time.
// Plain C++ only (no ATen) so the target pragma cannot clash with library inline code.
// The step types (FwdStep, BwdStep, ResetBeforeStep) are defined once, outside, in steps.h.
// Which kernel serves which cell is said by the cell traits in recurrence.cpp.
//
// Symbols (per row b, j in [0, H)): gates are stored activated in the saved buffer `g`
// (row stride gs): LSTM [i f g o], GRU [r z n hn], GRU-reset-before [r z n].
// Pre-activations `a` arrive in the same buffer: the step's recurrent GEMM has already
// accumulated h_prev @ W_hhᵀ into them (except the torch.nn GRU, whose product `hw`
// comes separately because r multiplies its n-block).

// ---- scalar math: accurate in double via libm, fast branch-free polynomials in float ----

static inline double v_exp(double x) { return std::exp(x); }
static inline double v_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double v_tanh(double x) { return std::tanh(x); }

// exp for float: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n by the exponent
// bits (relative error ~1e-7 over the clamped range, which only saturates ±inf-bound inputs).
static inline float v_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

static inline float v_sigmoid(float x) { return 1.0f / (1.0f + v_exp(-x)); }

// tanh for float: an odd polynomial near 0 (where 1 − 2/(e^{2x}+1) would cancel), else the
// exponential form; both computed and blended so the loop stays branch-free.
static inline float v_tanh(float x) {
  float ax = x < 0.0f ? -x : x;
  float z = x * x;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
  float big = 1.0f - 2.0f / (v_exp(2.0f * ax) + 1.0f);
  big = x < 0.0f ? -big : big;
  return ax < 0.625f ? small : big;
}

#define ROW_LOOP _Pragma("GCC ivdep") for (int64_t j = 0; j < H; ++j)
// the hidden units [u0, u1) this call owns (all of them unless the step is split by units)
#define COL_LOOP _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j)

// A padded row keeps its state: h (and c) copied from the previous step, y zero.
template <typename S>
static void carry_units(int64_t n, const S* __restrict hp, S* __restrict hc, const S* cp, S* cc,
                        S* y) {
  COL_LOOP hc[j] = hp[j];
  if (cc) {
    S* __restrict c = cc;
    const S* __restrict p = cp;
    COL_LOOP c[j] = p[j];
  }
  if (y) {
    S* __restrict o = y;
    COL_LOOP o[j] = S(0);
  }
}

template <typename S>
static void carry_rows(const FwdStep<S>& s, int64_t b) {
  const int64_t o = b * s.H + s.u0;
  carry_units<S>(s.u1 - s.u0, s.hp + o, s.hc + o, s.cc ? s.cp + o : nullptr,
                 s.cc ? s.cc + o : nullptr, s.y ? s.y + o : nullptr);
}

template <typename S>
static void put_units(int64_t n, const S* __restrict h, S* __restrict y) {
  COL_LOOP y[j] = h[j];
}

template <typename S>
static void put_y(const FwdStep<S>& s, int64_t b) {
  if (!s.y) return;
  const int64_t o = b * s.H + s.u0;
  put_units<S>(s.u1 - s.u0, s.hc + o, s.y + o);
}

// ---------------------------------------------------------------- forward
// LSTM and RNN take their pre-activations from `ak` (this call's units, gate-major rows of
// width G·n, input and recurrent products summed) plus `bias`; LSTM stores the activated
// gates in g.

// c = f⊙c_prev + i⊙g ; h = o⊙tanh(c)
template <typename S>
void lstm_fwd(const FwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (!s.valid(b)) { carry_rows(s, b); continue; }
    S* __restrict a = s.g + b * s.gs + s.u0;
    const S* __restrict r = s.ak + b * 4 * n;
    const S* __restrict bi = s.bias + s.u0;
    const int64_t o = b * H + s.u0;
    const S* __restrict cp = s.cp + o;
    S* __restrict cc = s.cc + o;
    S* __restrict hc = s.hc + o;
    COL_LOOP {
      S i = v_sigmoid(r[j] + bi[j]), f = v_sigmoid(r[n + j] + bi[H + j]);
      S gg = v_tanh(r[2 * n + j] + bi[2 * H + j]), og = v_sigmoid(r[3 * n + j] + bi[3 * H + j]);
      S c = f * cp[j] + i * gg;
      a[j] = i; a[H + j] = f; a[2 * H + j] = gg; a[3 * H + j] = og;
      cc[j] = c;
      hc[j] = og * v_tanh(c);
    }
    put_y(s, b);
  }
}

// h = tanh(a) or relu(a) = (a <= 0 ? 0 : a), NaN propagated
template <typename S, bool RELU>
void rnn_fwd(const FwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (!s.valid(b)) { carry_rows(s, b); continue; }
    const S* __restrict r = s.ak + b * n;
    const S* __restrict bi = s.bias + s.u0;
    S* __restrict hc = s.hc + b * H + s.u0;
    if (RELU) {
      // relu that keeps NaN (as torch.relu does): `v > 0 ? v : 0` would turn NaN into 0
      COL_LOOP { S v = r[j] + bi[j]; hc[j] = v <= S(0) ? S(0) : v; }
    } else {
      COL_LOOP hc[j] = v_tanh(r[j] + bi[j]);
    }
    put_y(s, b);
  }
}

// torch.nn GRU: r = σ(a_r + w_r), z = σ(a_z + w_z), hn = w_n + b_hn, n = tanh(a_n + r⊙hn),
// h = n + z⊙(h_prev − n), with a = ak + bias the input side and w = hw the recurrent product
// (both rows of width 3n); saves [r z n hn] in g.
template <typename S>
void gru_fwd(const FwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (!s.valid(b)) { carry_rows(s, b); continue; }
    S* __restrict a = s.g + b * s.gs + s.u0;
    const S* __restrict x = s.ak + b * 3 * n;
    const S* __restrict w = s.hw + b * 3 * n;
    const S* __restrict bi = s.bias + s.u0;
    const S* __restrict bhn = s.bhn + s.u0;
    const S* __restrict hp = s.hp + b * H + s.u0;
    S* __restrict hc = s.hc + b * H + s.u0;
    COL_LOOP {
      S r = v_sigmoid(x[j] + bi[j] + w[j]);
      S z = v_sigmoid(x[n + j] + bi[H + j] + w[n + j]);
      S hn = w[2 * n + j] + bhn[j];
      S nn = v_tanh(x[2 * n + j] + bi[2 * H + j] + r * hn);
      a[j] = r; a[H + j] = z; a[2 * H + j] = nn; a[3 * H + j] = hn;
      hc[j] = nn + z * (hp[j] - nn);
    }
    put_y(s, b);
  }
}

// GRU (reset before), part 1: r, z from their pre-activations; tmp = r⊙h_prev.
template <typename S>
void grub_fwd1(const ResetBeforeStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H;
  for (int64_t b = b0; b < b1; ++b) {
    S* __restrict a = s.g + b * s.gs;
    const S* __restrict hp = s.hp + b * H;
    S* __restrict rh = s.tmp + b * H;
    ROW_LOOP {
      S r = v_sigmoid(a[j]);
      a[j] = r;
      a[H + j] = v_sigmoid(a[H + j]);
      rh[j] = r * hp[j];
    }
  }
}

// part 2 (after a_n += (r⊙h_prev) @ W_hnᵀ): n = tanh(a_n), h = n + z⊙(h_prev − n).
template <typename S>
void grub_fwd2(const ResetBeforeStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H;
  for (int64_t b = b0; b < b1; ++b) {
    if (!s.valid(b)) {
      S* y = s.y ? s.y + b * H : nullptr;
      carry_units<S>(H, s.hp + b * H, s.hc + b * H, nullptr, nullptr, y);
      continue;
    }
    S* __restrict a = s.g + b * s.gs;
    const S* __restrict hp = s.hp + b * H;
    S* __restrict hc = s.hc + b * H;
    ROW_LOOP {
      S n = v_tanh(a[2 * H + j]);
      a[2 * H + j] = n;
      hc[j] = n + a[H + j] * (hp[j] - n);
    }
    if (s.y) put_units<S>(H, hc, s.y + b * H);
  }
}

// ---------------------------------------------------------------- backward
// Each writes dA (zero on padded rows) and the direct part of dL/dh_prev into dhn; the step's
// GEMM then adds dA @ W_hh. A padded row passes dh (and dc) through unchanged.

// A padded row: dA is zero (in `dak`, and `dakr` for a recurrent product kept apart) and dh
// passes through.
template <typename S>
static bool bwd_carry(const BwdStep<S>& s, int64_t b, int64_t G) {
  if (s.valid(b)) return false;
  const int64_t n = s.u1 - s.u0, o = b * s.H + s.u0;
  S* __restrict d = s.dak + b * G * n;
  for (int64_t j = 0; j < G * n; ++j) d[j] = S(0);
  if (s.dakr) {
    S* __restrict e = s.dakr + b * G * n;
    for (int64_t j = 0; j < G * n; ++j) e[j] = S(0);
  }
  S* __restrict dhn = s.dhn + o;
  const S* __restrict dh = s.dh + o;
  COL_LOOP dhn[j] = dh[j];
  return true;
}

// The same for the reset-before GRU, whose dA rows (G blocks of H) are in `da`.
template <typename S>
static bool bwd_carry(const ResetBeforeStep<S>& s, int64_t b, int64_t G) {
  if (s.valid(b)) return false;
  const int64_t H = s.H, n = H, o = b * H;
  S* __restrict da = s.da + b * s.das;
  for (int64_t q = 0; q < G; ++q) {
    S* __restrict d = da + q * H;
    COL_LOOP d[j] = S(0);
  }
  S* __restrict dhn = s.dhn + o;
  const S* __restrict dh = s.dh + o;
  COL_LOOP dhn[j] = dh[j];
  return true;
}

// LSTM and RNN write dA of their units to `dak` (gate-major rows of width G·n).
template <typename S>
void lstm_bwd(const BwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (bwd_carry(s, b, 4)) continue;
    const int64_t o = b * H + s.u0;
    const S* __restrict g = s.g + b * s.gs + s.u0;
    const S* __restrict cp = s.cp + o;
    const S* __restrict cc = s.cc + o;
    const S* __restrict gy = s.gy + b * s.gys + s.u0;
    const S* __restrict dhp = s.dh + o;
    S* __restrict dc = s.dc + o;
    S* __restrict da = s.dak + b * 4 * n;
    S* __restrict dhn = s.dhn + o;
    COL_LOOP {
      S i = g[j], f = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
      S dh = dhp[j] + gy[j];
      S tc = v_tanh(cc[j]);
      S dct = dc[j] + dh * og * (S(1) - tc * tc);
      da[j] = dct * gg * i * (S(1) - i);
      da[n + j] = dct * cp[j] * f * (S(1) - f);
      da[2 * n + j] = dct * i * (S(1) - gg * gg);
      da[3 * n + j] = dh * tc * og * (S(1) - og);
      dc[j] = dct * f;
      dhn[j] = S(0);
    }
  }
}

template <typename S, bool RELU>
void rnn_bwd(const BwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (bwd_carry(s, b, 1)) continue;
    const int64_t o = b * H + s.u0;
    const S* __restrict h = s.hc + o;
    const S* __restrict gy = s.gy + b * s.gys + s.u0;
    const S* __restrict dhp = s.dh + o;
    S* __restrict da = s.dak + b * n;
    S* __restrict dhn = s.dhn + o;
    COL_LOOP {
      S dh = dhp[j] + gy[j];
      // relu': 0 where h <= 0, else 1 (NaN included, as in torch's threshold_backward)
      da[j] = RELU ? (h[j] <= S(0) ? S(0) : dh) : dh * (S(1) - h[j] * h[j]);
      dhn[j] = S(0);
    }
  }
}

// torch.nn GRU: dak = [dA_r, dA_z, dA_n] (the input side), dakr = [dA_r, dA_z, dA_n ⊙ r]
// (the recurrent side: r multiplies W_hn h + b_hn), the direct part of dh_prev is dh ⊙ z.
template <typename S>
void gru_bwd(const BwdStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    if (bwd_carry(s, b, 3)) continue;
    const int64_t o = b * H + s.u0;
    const S* __restrict g = s.g + b * s.gs + s.u0;
    const S* __restrict hp = s.hp + o;
    const S* __restrict gy = s.gy + b * s.gys + s.u0;
    const S* __restrict dhp = s.dh + o;
    S* __restrict da = s.dak + b * 3 * n;
    S* __restrict dr = s.dakr + b * 3 * n;
    S* __restrict dhn = s.dhn + o;
    COL_LOOP {
      S r = g[j], z = g[H + j], nn = g[2 * H + j], hn = g[3 * H + j];
      S dh = dhp[j] + gy[j];
      S dan = dh * (S(1) - z) * (S(1) - nn * nn);
      S dar = dan * hn * r * (S(1) - r);
      S daz = dh * (hp[j] - nn) * z * (S(1) - z);
      da[j] = dar; da[n + j] = daz; da[2 * n + j] = dan;
      dr[j] = dar; dr[n + j] = daz; dr[2 * n + j] = dan * r;
      dhn[j] = dh * z;
    }
  }
}

// GRU (reset before), part 1: dA_n into da, total dh kept in dhn for part 2.
template <typename S>
void grub_bwd1(const ResetBeforeStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H;
  for (int64_t b = b0; b < b1; ++b) {
    if (bwd_carry(s, b, 3)) continue;
    const S* __restrict g = s.g + b * s.gs;
    const S* __restrict gy = s.gy + b * s.gys;
    const S* __restrict dhp = s.dh + b * H;
    S* __restrict da = s.da + b * s.das;
    S* __restrict dhn = s.dhn + b * H;
    ROW_LOOP {
      S z = g[H + j], n = g[2 * H + j];
      S dh = dhp[j] + gy[j];
      da[2 * H + j] = dh * (S(1) - z) * (S(1) - n * n);
      dhn[j] = dh;
    }
  }
}

// part 2 (tmp = d(r⊙h_prev) = dA_n @ W_hn): dA_r, dA_z and dh_prev's direct terms.
template <typename S>
void grub_bwd2(const ResetBeforeStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H;
  for (int64_t b = b0; b < b1; ++b) {
    if (!s.valid(b)) continue;  // part 1 already carried this row
    const S* __restrict g = s.g + b * s.gs;
    const S* __restrict hp = s.hp + b * H;
    const S* __restrict drh = s.tmp + b * H;
    S* __restrict da = s.da + b * s.das;
    S* __restrict dhn = s.dhn + b * H;
    ROW_LOOP {
      S r = g[j], z = g[H + j], n = g[2 * H + j];
      S dh = dhn[j];
      da[j] = drh[j] * hp[j] * r * (S(1) - r);
      da[H + j] = dh * (hp[j] - n) * z * (S(1) - z);
      dhn[j] = dh * z + drh[j] * r;
    }
  }
}

#undef ROW_LOOP
#undef COL_LOOP
