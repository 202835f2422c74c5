// The thread team of the time loops (no cell-specific code): shards of hidden units with
// their slices of the weights and chunk buffers, the team size and chunk length, the spinning
// barrier and run_team, which runs a step body for every shard and step.
//
// Included by recurrence.cpp after gemm.h, inside its anonymous namespace.

// ---- splitting a step by hidden units across a team of threads (LSTM, RNN, torch.nn GRU)
// Thread k owns units [u0, u1): per step it multiplies h_prev by its own packed slice of W_hh
// (the G gate rows of its units), runs its units' pointwise pass, and meets the others at one
// barrier. Each thread streams only its slice of W_hh, and the pointwise work needs no second
// fork. The backward splits the same way; its dh GEMM is split along K (each thread's dA times
// its slice), so each thread writes a (B, H) partial sum, added up by the owners next step.

// Below this many multiply-adds per step a team's barrier costs more than it saves.
constexpr int64_t kTeamMacs = 65536;

int64_t team_size(int64_t B, int64_t G, int64_t H) {
  static const bool off = [] {
    const char* v = std::getenv("SEQLAB_TEAM");
    return v != nullptr && std::string(v) == "0";
  }();
#ifndef _OPENMP
  return 1;
#endif
  if (off || at::in_parallel_region() || B * G * H * H < kTeamMacs || H < 16) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H / 8));
}

template <typename S>
struct Shard {
  int64_t u0 = 0, u1 = 0;
  at::Tensor w;    // W_hh rows of units [u0,u1), gate-major (G·n, H); W_hh itself when whole
  at::Tensor wi;   // fwd: the same rows of W_ih (G·n, I)
  at::Tensor tmp;   // fwd: (Tc·B, G·n) pre-activations of a chunk of steps; bwd: their dA
  at::Tensor tmp2;  // torch.nn GRU fwd: (B, G·n) h_prev @ wᵀ; bwd: the chunk's recurrent dA
  std::optional<PackedW<S>> pw, pwi;
  S* wp = nullptr;
  S* wip = nullptr;
  S* tp = nullptr;
  S* tp2 = nullptr;
};

// the G gate blocks' rows [u0, u0+n) of a gate-major (G·H, K) weight, as one (G·n, K) matrix
inline at::Tensor unit_rows(const at::Tensor& w, int64_t G, int64_t H, int64_t u0, int64_t n) {
  if (n == H) return w;
  std::vector<at::Tensor> parts;
  for (int64_t q = 0; q < G; ++q) parts.push_back(w.narrow(0, q * H + u0, n));
  return at::cat(parts, 0);
}

// fwd: C(Tc·B, G·n) = x_chunk @ wiᵀ, then per step C_t += h_prev @ wᵀ (tmp: pre-activations);
// bwd: per step C(B, H) = dA_t @ w, per chunk dx_chunk = dA_chunk @ wi (tmp: dA of a chunk)
template <typename S>
std::vector<Shard<S>> make_shards(const at::Tensor& w_hh, const at::Tensor& w_ih, int64_t G,
                                  int64_t H, int64_t B, int64_t P, int64_t Tc, bool fwd,
                                  bool gru, int64_t T) {
  const int64_t I = w_ih.size(1);
  const int64_t chunk = (H + P - 1) / P;
  const int64_t step = P == 1 ? H : (chunk + 7) / 8 * 8;
  std::vector<Shard<S>> out;
  out.reserve(P);
  for (int64_t u0 = 0; u0 < H; u0 += step) {
    Shard<S>& k = out.emplace_back();
    k.u0 = u0;
    k.u1 = std::min(H, u0 + step);
    const int64_t n = k.u1 - k.u0;
    k.w = unit_rows(w_hh, G, H, u0, n);
    k.wp = static_cast<S*>(k.w.data_ptr());
    k.wi = unit_rows(w_ih, G, H, u0, n);
    k.wip = static_cast<S*>(k.wi.data_ptr());
    k.tmp = at::empty({Tc * B, G * n}, w_hh.options());
    k.tp = static_cast<S*>(k.tmp.data_ptr());
    if (gru) {
      k.tmp2 = at::empty({fwd ? B : Tc * B, G * n}, w_hh.options());
      k.tp2 = static_cast<S*>(k.tmp2.data_ptr());
    }
    if (fwd) {
      k.pw.emplace(true, B, G * n, H, k.wp, H, true, T * B);
      k.pwi.emplace(true, Tc * B, G * n, I, k.wip, I, true, T * B);
    } else {
      k.pw.emplace(false, B, H, G * n, k.wp, H, true, T * B);
      k.pwi.emplace(false, Tc * B, I, G * n, k.wip, I, true, T * B);
    }
  }
  return out;
}

// Steps per chunk: one shard's chunk (rows of G·n) stays within ~256 KB of cache, but keeps
// at least ~512 rows so that the chunk's GEMMs run near peak.
int64_t chunk_steps(int64_t T, int64_t B, int64_t G, int64_t H, int64_t P, int64_t itemsize) {
  const int64_t row_bytes = B * G * ((H + P - 1) / P) * itemsize;
  const int64_t fit = (int64_t(256) << 10) / row_bytes, min_steps = (512 + B - 1) / B;
  return std::clamp<int64_t>(std::max(fit, min_steps), 1, T);
}

// The (G·H, K) gate-major matrix whose unit rows the shards hold as (G·n, K) blocks.
template <typename S>
at::Tensor join_units(const std::vector<Shard<S>>& shards, const std::vector<at::Tensor>& parts,
                      int64_t G, int64_t H) {
  if (shards.size() == 1) return parts[0];
  at::Tensor out = at::empty({G * H, parts[0].size(1)}, parts[0].options());
  for (size_t q = 0; q < shards.size(); ++q) {
    const int64_t n = shards[q].u1 - shards[q].u0;
    for (int64_t g = 0; g < G; ++g)
      out.narrow(0, g * H + shards[q].u0, n).copy_(parts[q].narrow(0, g * n, n));
  }
  return out;
}

// Pull the next step's rows of a (T, B, row) buffer, columns [c0, c0+n) of each of `blocks`
// blocks `bs` apart, towards the cache while this step's GEMM runs: they were written long
// before (the input projection of all steps, or the saved forward) and would stall the
// pointwise pass.
template <typename S>
inline void prefetch_rows(const S* p, int64_t B, int64_t row, int64_t blocks, int64_t bs,
                          int64_t n) {
  constexpr int64_t line = 64 / sizeof(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t q = 0; q < blocks; ++q) {
      const S* r = p + b * row + q * bs;
      for (int64_t j = 0; j < n; j += line) __builtin_prefetch(r + j, 0, 3);
    }
}

// Waits until all `nth` threads have arrived `round` times. A spinning counter: the team meets
// once per step, and GOMP's barrier costs ~0.4 µs here against ~0.07 µs for this; after a
// while it yields, so an oversubscribed machine is not starved by the spinning.
inline void meet(std::atomic<int64_t>& arrived, int64_t nth, int64_t round) {
  arrived.fetch_add(1, std::memory_order_acq_rel);
  const int64_t want = nth * round;
  for (int64_t spins = 0; arrived.load(std::memory_order_acquire) < want; ++spins) {
    if (spins < 20000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

#ifdef _OPENMP
// Runs region(tid, nth, sync, guard) on an OpenMP team of P threads, BLAS single-threaded
// inside (each thread is one of the team): sync() makes the team meet (every thread calls it
// equally often); guard(f) runs f, keeping the first exception any thread throws, which is
// rethrown once the team is done (a thread that threw still meets the others).
template <typename R>
void team_region(int64_t P, const R& region) {
  std::exception_ptr error;
  std::atomic<int64_t> arrived{0};
#pragma omp parallel num_threads(static_cast<int>(P))
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int before = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : -1;
    int64_t round = 0;
    auto sync = [&] { meet(arrived, nth, ++round); };
    auto guard = [&](auto&& f) {
      try {
        f();
      } catch (...) {
#pragma omp critical(seqlab_team_error)
        if (!error) error = std::current_exception();
      }
    };
    region(tid, nth, sync, guard);
    if (before >= 0) MKL_Set_Num_Threads_Local(before);
  }
  if (error) std::rethrow_exception(error);
}
#endif

// body(k, step) for every shard k and step, the team meeting after each step
template <typename F>
void run_team(int64_t P, int64_t T, const F& body) {
  if (P == 1) {
    for (int64_t step = 0; step < T; ++step) body(0, step);
    return;
  }
#ifdef _OPENMP
  team_region(P, [&](int tid, int nth, auto& sync, auto& guard) {
    for (int64_t step = 0; step < T; ++step) {
      for (int64_t k = tid; k < P; k += nth) guard([&] { body(k, step); });
      sync();
    }
  });
#else
  for (int64_t step = 0; step < T; ++step)
    for (int64_t k = 0; k < P; ++k) body(k, step);
#endif
}
