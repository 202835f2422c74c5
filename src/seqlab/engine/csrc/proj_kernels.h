// Row kernels of the projected LSTM's time loop (proj_cells.h), for batch rows [b0, b1) of
// one step and the cell units [u0, u1) of one shard of the thread team (all H on one thread).
//
// Included twice by proj_cells.h, like kernels.h: once in namespace seqlab_base and once in
// seqlab_avx2 under `#pragma GCC target("avx2,fma")`, so it reuses that namespace's
// v_sigmoid / v_tanh. Plain C++ only.
//
// Layouts: "global" buffers are (B, 4H) gate-major rows (column q·H + u) or (B, H); the
// shard-local ones (B, 4n) (column q·n + j) or (B, n), n = u1 − u0.
// Per valid row, with the pre-activations a = xw_t (global, biases folded in) + rec (local:
// h_{t−1} times the shard's rows of W_hh), gates [i f g o]:
//   forward   i, f, g, o = σ, σ, tanh, σ of a;  c = f⊙c_{t−1} + i⊙g;  m = o⊙tanh c
//   backward  dĉ = dc + dm⊙o⊙(1 − tanh²c), dm = dh W_hr computed by the caller;
//             dA = [dĉ⊙g⊙i(1−i), dĉ⊙c_{t−1}⊙f(1−f), dĉ⊙i⊙(1−g²), dm⊙tanh c⊙o(1−o)];
//             dc ← dĉ⊙f; m = o⊙tanh c written again for dW_hr = Σ dhᵀ m.
// A padded row carries c (dc), and gets m = 0 and dA = 0, so the products after the row
// kernel add nothing for it.

template <typename S>
void proj_fwd(const ProjStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, u0 = s.u0, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    const S* __restrict cp = s.cp + b * H + u0;
    S* __restrict cc = s.cc + b * H + u0;
    S* __restrict m = s.m + b * H + u0;
    if (!s.valid(b)) {
      for (int64_t j = 0; j < n; ++j) { cc[j] = cp[j]; m[j] = S(0); }
      continue;
    }
    S* __restrict a = s.g + b * 4 * H + u0;
    const S* __restrict r = s.rec + b * 4 * n;
    _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j) {
      S i = v_sigmoid(a[j] + r[j]), f = v_sigmoid(a[H + j] + r[n + j]);
      S gg = v_tanh(a[2 * H + j] + r[2 * n + j]), og = v_sigmoid(a[3 * H + j] + r[3 * n + j]);
      S c = f * cp[j] + i * gg;
      a[j] = i; a[H + j] = f; a[2 * H + j] = gg; a[3 * H + j] = og;
      cc[j] = c;
      m[j] = og * v_tanh(c);
    }
  }
}

template <typename S>
void proj_bwd(const ProjStep<S>& s, int64_t b0, int64_t b1) {
  const int64_t H = s.H, u0 = s.u0, n = s.u1 - s.u0;
  for (int64_t b = b0; b < b1; ++b) {
    S* __restrict da = s.da + b * 4 * H + u0;
    S* __restrict m = s.m + b * H + u0;
    if (!s.valid(b)) {
      for (int64_t q = 0; q < 4; ++q) std::fill_n(da + q * H, n, S(0));
      std::fill_n(m, n, S(0));
      continue;
    }
    const S* __restrict g = s.g + b * 4 * H + u0;
    const S* __restrict cp = s.cp + b * H + u0;
    const S* __restrict cc = s.cc + b * H + u0;
    const S* __restrict dm = s.dm + b * n;
    S* __restrict dc = s.dc + b * H + u0;
    _Pragma("GCC ivdep") for (int64_t j = 0; j < n; ++j) {
      S i = g[j], f = g[H + j], gg = g[2 * H + j], og = g[3 * H + j];
      S tc = v_tanh(cc[j]);
      S dct = dc[j] + dm[j] * og * (S(1) - tc * tc);
      da[j] = dct * gg * i * (S(1) - i);
      da[H + j] = dct * cp[j] * f * (S(1) - f);
      da[2 * H + j] = dct * i * (S(1) - gg * gg);
      da[3 * H + j] = dm[j] * tc * og * (S(1) - og);
      dc[j] = dct * f;
      m[j] = og * tc;
    }
  }
}
