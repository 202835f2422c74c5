// What one call of a row kernel (kernels.h) sees: the time loop's state at step t, for the
// hidden units [u0, u1) the calling thread owns (all of them on one thread) and a range of
// batch rows given with the call. The team loop (LSTM, RNN, torch.nn GRU) fills FwdStep and
// BwdStep; the reset-before GRU's own loop fills ResetBeforeStep. A cell's kernel reads the
// fields its cell has (c only with a cell state, hw/bhn only for a recurrent product kept
// apart, see the traits in recurrence.cpp).
//
// Included once by recurrence.cpp at global scope, before kernels.h (which is compiled twice,
// once per instruction set, and must see one definition of these types).

template <typename S>
struct FwdStep {
  int64_t H = 0, t = 0, gs = 0;
  int64_t u0 = 0, u1 = 0;     // the hidden units handled by this call: [u0, u1)
  const int64_t* len = nullptr;  // valid steps per batch row, or null (all valid)
  S* g = nullptr;             // activated gates of step t, row b at g + b*gs (saved or scratch)
  const S* ak = nullptr;      // units [u0,u1): x@W_iₖᵀ (+ h_prev@W_hₖᵀ unless apart), rows of G·n
  const S* bias = nullptr;    // folded bias (G·H, gate-major) added to ak
  const S* hw = nullptr;      // apart: h_prev @ W_kᵀ for units [u0,u1), rows of G·n
  const S* bhn = nullptr;     // apart: the recurrent bias kept out of the fold (GRU: b_hn)
  const S* hp = nullptr;      // h_prev (B, H)
  S* hc = nullptr;            // h of this step (B, H)
  const S* cp = nullptr;      // cell state c_prev (cells with one)
  S* cc = nullptr;            // cell state of this step
  S* y = nullptr;             // masked output row block (lengths only) or null
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

template <typename S>
struct BwdStep {
  int64_t H = 0, t = 0, gs = 0;
  int64_t u0 = 0, u1 = 0;
  const int64_t* len = nullptr;
  const S* g = nullptr;       // saved gates of step t (cells that keep them)
  const S* hp = nullptr;      // h_prev, h of this step
  const S* hc = nullptr;
  const S* cp = nullptr;      // cell state c_prev, c of this step
  const S* cc = nullptr;
  const S* gy = nullptr;      // dL/dy of step t, row b at gy + b*gys (gys = H, or 0 if broadcast)
  int64_t gys = 0;
  const S* dh = nullptr;      // dL/dh of this step (from later steps) (B, H)
  S* dhn = nullptr;           // dL/dh_prev being built: its direct part (B, H)
  S* dc = nullptr;            // dL/dc, updated in place (B, H)
  S* dak = nullptr;           // dA of units [u0,u1) (input side), rows of G·n
  S* dakr = nullptr;          // apart: the recurrent side's dA (GRU: [dA_r, dA_z, dA_n ⊙ r])
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};

// The reset-before GRU: whole rows (all H units), two passes around the n-block's product.
template <typename S>
struct ResetBeforeStep {
  int64_t H = 0, t = 0, gs = 0;
  const int64_t* len = nullptr;
  S* g = nullptr;             // fwd: pre-activations in, activated [r z n] out; bwd: saved
  const S* hp = nullptr;      // h_prev (B, H)
  S* hc = nullptr;            // h of this step (B, H)
  S* y = nullptr;             // masked output row block (lengths only) or null
  S* tmp = nullptr;           // (B, H): fwd r⊙h_prev; bwd d(r⊙h_prev)
  const S* gy = nullptr;      // bwd: dL/dy of step t (row stride gys)
  int64_t gys = 0;
  const S* dh = nullptr;      // bwd: dL/dh of this step
  S* dhn = nullptr;           // bwd: dL/dh_prev being built
  S* da = nullptr;            // bwd: dA of step t, row stride das
  int64_t das = 0;
  bool valid(int64_t b) const { return len == nullptr || t < len[b]; }
};
