// minGRU / minLSTM: the sequential evaluation fused into one pass over time, forward and
// hand-derived backward (equations: seqlab/functional/minimal.py, seqlab/engine/minimal.py).
//
//   torch.ops.seqlab_engine.minimal_forward(kind, xw (T, B, G·H), h0 (B, H), lengths?)
//       -> h (T, B, H)                        the state after every step (padded: kept)
//   torch.ops.seqlab_engine.minimal_backward(kind, xw, h, h0, c (T, B, H), ghn (B, H), lengths?)
//       -> [dxw (T, B, G·H), dh0 (B, H)]      c = ∂L/∂y on valid steps (0 on padded ones)
//
// kind 0 = minGRU (G = 2: k, ĥ), 1 = minLSTM (G = 3: k_f, k_i, ĥ). xw is already in the
// order of processing (the caller reverses it for reverse=True). Each (row, unit) column is
// an independent recurrence h_t = a_t h_{t−1} + b_t, so threads split the B·H columns and
// walk all T steps of theirs with no synchronisation. Included once at the end of
// recurrence.cpp; registers its ops as a library fragment.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
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
#define SEQLAB_MROWS(name) (cpu_has_avx2() ? &seqlab_avx2::mrows::name : &seqlab_base::mrows::name)
#else
#define SEQLAB_MROWS(name) (&seqlab_base::mrows::name)
#endif

namespace seqlab_minimal {

struct Dims {
  int64_t T, B, H, G;
};

// Calls body(t, b, j0, j1, n0) for the rows b and unit ranges [j0, j1) that make up the
// flattened columns [c0, c1) (column = b·H + j), at step t; n0 = b·H + j0 − c0 is the
// offset of the range in the thread's own per-column arrays.
template <typename F>
inline void for_columns(const Dims& d, int64_t t, int64_t c0, int64_t c1, F&& body) {
  for (int64_t b = c0 / d.H; b * d.H < c1; ++b) {
    const int64_t j0 = std::max(c0 - b * d.H, int64_t(0));
    const int64_t j1 = std::min(c1 - b * d.H, d.H);
    body(t, b, j0, j1, b * d.H + j0 - c0);
  }
}

inline int64_t grain(int64_t T) { return T > 0 && T < 8192 ? 8192 / T : 1; }

template <typename S>
void forward_cpu(int64_t kind, const S* xw, const S* h0, const int64_t* len, S* h,
                 const Dims& d) {
  const int64_t GH = d.G * d.H, BH = d.B * d.H, H = d.H;
  const auto gru = SEQLAB_MROWS(mingru_fwd_row<S>);
  const auto lstm = SEQLAB_MROWS(minlstm_fwd_row<S>);
  at::parallel_for(0, BH, grain(d.T), [&](int64_t c0, int64_t c1) {
    std::vector<S> state(h0 + c0, h0 + c1);
    for (int64_t t = 0; t < d.T; ++t) {
      for_columns(d, t, c0, c1, [&](int64_t t, int64_t b, int64_t j0, int64_t j1, int64_t n0) {
        const S* row = xw + (t * d.B + b) * GH + j0;
        S* out = h + (t * d.B + b) * H + j0;
        S* st = state.data() + n0;
        const int64_t n = j1 - j0;
        if (len != nullptr && t >= len[b]) {  // padded: the state stays
          std::copy(st, st + n, out);
        } else if (kind == 0) {
          gru(n, row, row + H, st, out);
        } else {
          lstm(n, row, row + H, row + 2 * H, st, out);
        }
      });
    }
  });
}

template <typename S>
void backward_cpu(int64_t kind, const S* xw, const S* h, const S* h0, const S* c, const S* ghn,
                  const int64_t* len, S* dxw, S* dh0, const Dims& d) {
  const int64_t GH = d.G * d.H, BH = d.B * d.H, H = d.H;
  const auto gru = SEQLAB_MROWS(mingru_bwd_row<S>);
  const auto lstm = SEQLAB_MROWS(minlstm_bwd_row<S>);
  at::parallel_for(0, BH, grain(d.T), [&](int64_t c0, int64_t c1) {
    std::vector<S> gh(ghn + c0, ghn + c1);  // ∂L/∂h_t in total, carried backwards
    for (int64_t t = d.T - 1; t >= 0; --t) {
      for_columns(d, t, c0, c1, [&](int64_t t, int64_t b, int64_t j0, int64_t j1, int64_t n0) {
        const int64_t r = t * d.B + b;
        const S* row = xw + r * GH + j0;
        S* drow = dxw + r * GH + j0;
        const S* hp = (t > 0 ? h + (r - d.B) * H : h0 + b * H) + j0;
        const S* cr = c + r * H + j0;
        S* g = gh.data() + n0;
        const int64_t n = j1 - j0;
        if (len != nullptr && t >= len[b]) {  // padded: no gradient to its xw, ĝ passes
          for (int64_t k = 0; k < d.G; ++k) std::fill(drow + k * H, drow + k * H + n, S(0));
        } else if (kind == 0) {
          gru(n, row, row + H, hp, cr, g, drow, drow + H);
        } else {
          lstm(n, row, row + H, row + 2 * H, hp, cr, g, drow, drow + H, drow + 2 * H);
        }
      });
    }
    std::copy(gh.begin(), gh.end(), dh0 + c0);
  });
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
                         const at::Tensor& h0, const std::optional<at::Tensor>& lengths) {
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
  if (lengths) {
    const at::Tensor& l = *lengths;
    TORCH_CHECK(l.dim() == 1 && l.size(0) == d.B && l.scalar_type() == at::kLong &&
                    l.device().is_cpu(),
                op, ": lengths: expected a CPU int64 tensor of shape (", d.B, ",), got ",
                l.scalar_type(), " ", l.sizes());
    const int64_t* p = l.contiguous().data_ptr<int64_t>();
    for (int64_t b = 0; b < d.B; ++b)
      TORCH_CHECK(p[b] >= 0 && p[b] <= d.T, op, ": lengths: expected values in [0, ", d.T,
                  "], got ", p[b], " at ", b);
  }
  return d;
}

at::Tensor minimal_forward(int64_t kind, const at::Tensor& xw, const at::Tensor& h0,
                           const std::optional<at::Tensor>& lengths) {
  const Dims d = check_common("minimal_forward", kind, xw, h0, lengths);
  const at::Tensor x = xw.contiguous(), s0 = h0.contiguous();
  const at::Tensor len = lengths ? lengths->contiguous() : at::Tensor();
  at::Tensor h = at::empty({d.T, d.B, d.H}, xw.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "seqlab_minimal_forward", [&] {
    forward_cpu<scalar_t>(kind, x.data_ptr<scalar_t>(), s0.data_ptr<scalar_t>(),
                          lengths ? len.data_ptr<int64_t>() : nullptr, h.data_ptr<scalar_t>(),
                          d);
  });
  return h;
}

std::vector<at::Tensor> minimal_backward(int64_t kind, const at::Tensor& xw, const at::Tensor& h,
                                         const at::Tensor& h0, const at::Tensor& c,
                                         const at::Tensor& ghn,
                                         const std::optional<at::Tensor>& lengths) {
  const char* op = "minimal_backward";
  const Dims d = check_common(op, kind, xw, h0, lengths);
  check(op, "h", h, {d.T, d.B, d.H}, xw);
  check(op, "c", c, {d.T, d.B, d.H}, xw);
  check(op, "ghn", ghn, {d.B, d.H}, xw);
  const at::Tensor x = xw.contiguous(), hs = h.contiguous(), s0 = h0.contiguous();
  const at::Tensor cc = c.contiguous(), gn = ghn.contiguous();
  const at::Tensor len = lengths ? lengths->contiguous() : at::Tensor();
  at::Tensor dxw = at::empty(x.sizes(), x.options());
  at::Tensor dh0 = at::empty({d.B, d.H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "seqlab_minimal_backward", [&] {
    backward_cpu<scalar_t>(kind, x.data_ptr<scalar_t>(), hs.data_ptr<scalar_t>(),
                           s0.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                           gn.data_ptr<scalar_t>(), lengths ? len.data_ptr<int64_t>() : nullptr,
                           dxw.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(), d);
  });
  return {dxw, dh0};
}

}  // namespace seqlab_minimal

TORCH_LIBRARY_FRAGMENT(seqlab_engine, m) {
  m.def("minimal_forward", &seqlab_minimal::minimal_forward);
  m.def("minimal_backward", &seqlab_minimal::minimal_backward);
}
