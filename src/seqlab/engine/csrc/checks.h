// Argument checks of the seqlab_engine ops.
//
// The ops are reachable directly (torch.ops.seqlab_engine.forward/backward), so they check
// their own arguments instead of trusting the Python layer: every message names the op, the
// argument, what was expected and what was given. A bad argument must end in a RuntimeError,
// never in a crash or a silently wrong answer (the time loops index raw pointers by these
// shapes). Included by recurrence.cpp inside its anonymous namespace, after `Mode`.

inline const char* mode_name(int64_t mode) {
  static const char* names[] = {"rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"};
  return mode >= 0 && mode <= 4 ? names[mode] : "?";
}

// gates per hidden unit: the rows of W_ih / W_hh are G·H
inline int64_t gates_width(int64_t mode) {
  return mode == LSTM ? 4 : (mode == GRU || mode == GRU_BEFORE) ? 3 : 1;
}

inline std::string shape_str(at::IntArrayRef shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + (shape.size() == 1 ? ",)" : ")");
}

inline void check_mode(const char* op, int64_t mode) {
  TORCH_CHECK(mode >= 0 && mode <= 4, op,
              ": mode: expected 0..4 (rnn_tanh, rnn_relu, lstm, gru, gru_reset_before), got ",
              mode);
}

// x: the tensor every other one must match in dtype and device
inline void check_x(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.defined(), op, ": x: expected a (T, B, I) tensor, got None");
  TORCH_CHECK(x.dim() == 3, op, ": x: expected a (T, B, I) tensor, got shape ",
              shape_str(x.sizes()));
  TORCH_CHECK(x.device().is_cpu(), op, ": x: expected a CPU tensor, got device ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x: expected dtype float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), op, ": x: expected a contiguous tensor");
}

// `t` has exactly `shape`, x's dtype and device (and is contiguous unless `any_strides`)
inline void check_like(const char* op, const char* name, const at::Tensor& t,
                       at::IntArrayRef shape, const at::Tensor& x, const std::string& why,
                       bool any_strides = false) {
  TORCH_CHECK(t.defined(), op, ": ", name, ": expected shape ", shape_str(shape), " ", why,
              ", got None");
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, ": expected shape ", shape_str(shape), " ",
              why, ", got ", shape_str(t.sizes()));
  TORCH_CHECK(t.scalar_type() == x.scalar_type() && t.device() == x.device(), op, ": ", name,
              ": expected dtype ", x.scalar_type(), " on ", x.device(), " (like x), got ",
              t.scalar_type(), " on ", t.device());
  TORCH_CHECK(any_strides || t.is_contiguous(), op, ": ", name,
              ": expected a contiguous tensor");
}

// lengths: (B,) int64 on the CPU, every value in [0, T]
inline void check_lengths(const char* op, const at::Tensor& len, int64_t T, int64_t B) {
  if (!len.defined()) return;
  TORCH_CHECK(len.dim() == 1 && len.size(0) == B, op, ": lengths: expected shape (", B,
              ",) (one per batch row), got ", shape_str(len.sizes()));
  TORCH_CHECK(len.scalar_type() == at::kLong, op, ": lengths: expected dtype int64, got ",
              len.scalar_type());
  TORCH_CHECK(len.device().is_cpu(), op, ": lengths: expected a CPU tensor, got device ",
              len.device());
  TORCH_CHECK(len.is_contiguous(), op, ": lengths: expected a contiguous tensor");
  const int64_t* v = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(v[b] >= 0 && v[b] <= T, op, ": lengths: expected values in [0, ", T,
                "] (T = ", T, "), got lengths[", b, "] = ", v[b]);
}

inline std::string rows_why(int64_t mode, const char* cols) {
  return std::string("(G·H, ") + cols + ") with G = " + std::to_string(gates_width(mode)) +
         " for mode " + mode_name(mode);
}

// forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save)
inline void check_forward(int64_t mode, const at::Tensor& x, const at::Tensor& h0,
                          const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& b_ih, const at::Tensor& b_hh,
                          const at::Tensor& len) {
  const char* op = "seqlab_engine.forward";
  check_mode(op, mode);
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2);
  TORCH_CHECK(h0.defined() && h0.dim() == 2 && h0.size(0) == B, op,
              ": h0: expected shape (B, H) with B = ", B, " (from x), got ",
              h0.defined() ? shape_str(h0.sizes()) : std::string("None"));
  const int64_t H = h0.size(1), G = gates_width(mode);
  check_like(op, "h0", h0, {B, H}, x, "(B, H)");
  if (mode == LSTM)
    check_like(op, "c0", c0, {B, H}, x, "(B, H) like h0 (mode lstm has a cell state)");
  check_like(op, "w_ih", w_ih, {G * H, I}, x, rows_why(mode, "I"));
  check_like(op, "w_hh", w_hh, {G * H, H}, x, rows_why(mode, "H"));
  if (b_ih.defined()) check_like(op, "b_ih", b_ih, {G * H}, x, rows_why(mode, "") + " (G·H,)");
  if (b_hh.defined()) check_like(op, "b_hh", b_hh, {G * H}, x, rows_why(mode, "") + " (G·H,)");
  check_lengths(op, len, T, B);
}

// backward(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, lengths, reverse, hbuf, cbuf, gates, gy,
//          ghn, gcn): the buffers must be those forward(save=True) returned for these inputs
inline void check_backward(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const at::Tensor& len,
                           const at::Tensor& hbuf, const at::Tensor& cbuf,
                           const at::Tensor& gates, const at::Tensor& gy, const at::Tensor& ghn,
                           const at::Tensor& gcn) {
  const char* op = "seqlab_engine.backward";
  check_mode(op, mode);
  check_x(op, x);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2);
  TORCH_CHECK(hbuf.defined() && hbuf.dim() == 3, op,
              ": hbuf: expected shape (T + 1, B, H) as returned by forward, got ",
              hbuf.defined() ? shape_str(hbuf.sizes()) : std::string("None"));
  const int64_t H = hbuf.size(2), G = gates_width(mode);
  check_like(op, "hbuf", hbuf, {T + 1, B, H}, x, "(T + 1, B, H) as returned by forward");
  check_like(op, "w_ih", w_ih, {G * H, I}, x, rows_why(mode, "I"));
  check_like(op, "w_hh", w_hh, {G * H, H}, x, rows_why(mode, "H"));
  if (mode == LSTM)
    check_like(op, "cbuf", cbuf, {T + 1, B, H}, x, "(T + 1, B, H) as returned by forward");
  if (mode == LSTM || mode == GRU)
    check_like(op, "gates", gates, {T, B, 4 * H}, x,
               std::string("(T, B, 4·H) as returned by forward(save=True) for mode ") +
                   mode_name(mode));
  else if (mode == GRU_BEFORE)
    check_like(op, "gates", gates, {T, B, 3 * H}, x,
               "(T, B, 3·H) as returned by forward(save=True) for mode gru_reset_before");
  check_like(op, "gy", gy, {T, B, H}, x, "(T, B, H) like the output y", true);
  check_like(op, "ghn", ghn, {B, H}, x, "(B, H) like h_n");
  if (mode == LSTM) check_like(op, "gcn", gcn, {B, H}, x, "(B, H) like c_n (mode lstm)");
  check_lengths(op, len, T, B);
}

// h_mask of the masked ops: (B, H) like x, for the team-loop kinds only
inline void check_h_mask(const char* op, int64_t mode, const at::Tensor& h_mask,
                         const at::Tensor& x, int64_t B, int64_t H) {
  TORCH_CHECK(mode != GRU_BEFORE, op,
              ": mode: gru_reset_before takes no h_mask here (run it on the fused kernel)");
  const int64_t shape[] = {B, H};
  check_like(op, "h_mask", h_mask, shape, x, "(batch, hidden)");
}
