"""Trainer behaviour against hand-computed oracles: clipping, accumulation, schedules,
evaluation/best/early stopping, time budget, NaN guard, TBPTT loop, logging."""

import math
import time

import pytest
import torch
from torch import nn

from seqlab.training import (
    TBPTT,
    MetricsFile,
    NonFiniteLossError,
    ReduceOnPlateau,
    TrainConfig,
    Trainer,
    load_checkpoint,
)
from seqlab.training.logs import TensorBoard


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x, y):
        return (self.lin(x).squeeze(-1) - y).pow(2).mean()


def batches(n=4, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, 3, generator=g), torch.randn(B, generator=g)) for _ in range(n)]


def oracle_grad(model, batch):
    model.zero_grad()
    model(*batch).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_clip_by_global_norm_matches_hand_computation():
    torch.manual_seed(0)
    model, data = Linear(), batches(1)
    before = [p.detach().clone() for p in model.parameters()]
    g = oracle_grad(model, data[0])
    norm = math.sqrt(sum(float(x.pow(2).sum()) for x in g))
    cfg = TrainConfig(max_steps=1, optimizer="sgd", lr=1.0, clip_norm=0.1, seed=None)
    tr = Trainer(model, data, cfg)
    tr.fit()
    assert tr.history[0]["grad_norm"] == pytest.approx(norm, rel=1e-6)
    assert norm > 0.1
    for p, b, gr in zip(model.parameters(), before, g, strict=True):
        torch.testing.assert_close(p.detach(), b - gr * (0.1 / norm), rtol=1e-5, atol=1e-6)


def test_clip_by_value_matches_hand_computation():
    torch.manual_seed(0)
    model, data = Linear(), batches(1)
    before = [p.detach().clone() for p in model.parameters()]
    g = oracle_grad(model, data[0])
    Trainer(model, data, TrainConfig(max_steps=1, optimizer="sgd", lr=1.0, clip_value=0.05)).fit()
    for p, b, gr in zip(model.parameters(), before, g, strict=True):
        torch.testing.assert_close(p.detach(), b - gr.clamp(-0.05, 0.05))


def test_gradient_accumulation_equals_one_big_batch():
    data = batches(4, B=4)
    big = [(torch.cat([data[i][0], data[i + 1][0]]), torch.cat([data[i][1], data[i + 1][1]]))
           for i in (0, 2)]  # fmt: skip
    torch.manual_seed(0)
    a = Linear()
    b = Linear()
    b.load_state_dict(a.state_dict())
    Trainer(a, data, TrainConfig(optimizer="sgd", lr=0.1, grad_accum=2)).fit()
    Trainer(b, big, TrainConfig(optimizer="sgd", lr=0.1)).fit()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_warmup_cosine_learning_rates():
    data = batches(6)
    cfg = TrainConfig(max_steps=6, lr=1.0, schedule="cosine", warmup_steps=2, optimizer="sgd")
    tr = Trainer(Linear(), data, cfg)
    tr.fit()
    # s/W for s <= 2, then ½(1 + cos(π (s − 2)/4))
    c = math.cos
    want = [0.5, 1.0, 0.5 * (1 + c(math.pi / 4)), 0.5, 0.5 * (1 + c(3 * math.pi / 4)), 0.0]
    assert [r["lr"] for r in tr.history] == pytest.approx(want, abs=1e-12)


def test_reduce_on_plateau_rule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = ReduceOnPlateau(opt, patience=1, factor=0.5)
    lrs = []
    for m in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95]:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    # best 1.0 -> 0.9; then stalls: bad 1 (<= patience), bad 2 -> halve; bad 1; bad 2 -> halve
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


def test_eval_best_checkpoint_and_early_stopping(tmp_path):
    scores = iter([0.2, 0.5, 0.4, 0.45, 0.3, 0.9, 0.9])

    def metric_fn(model, val):
        assert not model.training and not torch.is_grad_enabled()
        return {"acc": next(scores)}

    cfg = TrainConfig(epochs=None, max_steps=100, eval_every=2, monitor="acc", mode="max",
                      patience=3, checkpoint_dir=str(tmp_path))  # fmt: skip
    tr = Trainer(Linear(), batches(8), cfg, val_data=[0], metric_fn=metric_fn)
    res = tr.fit()
    # evals at steps 2,4,6,8,10: best 0.5 at step 4, then 3 evals without improvement
    assert res.stopped == "early_stopping" and res.steps == 10
    assert [e["acc"] for e in res.evals] == [0.2, 0.5, 0.4, 0.45, 0.3]
    assert res.best_metric == 0.5
    _, meta = load_checkpoint(res.best_path)
    assert meta["counters"]["step"] == 4
    _, last = load_checkpoint(res.last_path)
    assert last["counters"]["step"] == 10
    rows = MetricsFile.read(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("kind") == "eval"] == [2, 4, 6, 8, 10]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 11))


def test_default_validation_loss_and_monitor_error():
    tr = Trainer(Linear(), batches(2), TrainConfig(), val_data=batches(2, seed=1))
    want = sum(float(tr.model(*b).detach()) for b in batches(2, seed=1)) / 2
    assert tr.evaluate()["val_loss"] == pytest.approx(want)
    bad = Trainer(Linear(), batches(2), TrainConfig(eval_every=1, monitor="bleu"),
                  val_data=batches(2))  # fmt: skip
    with pytest.raises(ValueError, match="monitor"):
        bad.fit()


def test_time_budget_stops_the_run():
    def slow_loss(model, batch):
        time.sleep(0.05)
        return model(*batch)

    cfg = TrainConfig(epochs=None, max_steps=10_000, time_budget_s=0.3)
    t0 = time.monotonic()
    res = Trainer(Linear(), batches(3), cfg, loss_fn=slow_loss).fit()
    assert res.stopped == "time_budget" and 1 <= res.steps < 100
    assert time.monotonic() - t0 < 10


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def loss_fn(model, batch):
        loss = model(*batch)
        return loss * float("nan") if tr.step == 2 else loss

    cfg = TrainConfig(epochs=None, max_steps=10, checkpoint_dir=str(tmp_path), save_every=1)
    tr = Trainer(Linear(), batches(4), cfg, loss_fn=loss_fn)
    before = [p.detach().clone() for p in tr.model.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*last.safetensors"):
        tr.fit()
    _, meta = load_checkpoint(tmp_path / "last.safetensors")
    assert meta["counters"]["step"] == 2
    assert not all(torch.equal(p, b) for p, b in zip(tr.model.parameters(), before, strict=True))


def test_non_finite_gradient_is_caught_before_the_update():
    def loss_fn(model, batch):
        w = model.lin.weight
        return model(*batch) + torch.sqrt((w - w.detach()).abs().sum())  # finite value, NaN grad

    tr = Trainer(Linear(), batches(2), TrainConfig(), loss_fn=loss_fn)
    before = [p.detach().clone() for p in tr.model.parameters()]
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        tr.fit()
    assert all(torch.equal(p, b) for p, b in zip(tr.model.parameters(), before, strict=True))


def test_zero_length_dataset_is_refused():
    with pytest.raises(ValueError, match="zero-length"):
        Trainer(Linear(), [], TrainConfig())

    def empty():
        yield from ()

    class Once:
        def __iter__(self):
            return empty()

    with pytest.raises(ValueError, match="zero-length"):
        Trainer(Linear(), Once(), TrainConfig()).fit()


def test_trainer_tbptt_equals_hand_written_truncated_loop():
    torch.manual_seed(0)
    rnn, head = nn.GRU(2, 5, batch_first=True), nn.Linear(5, 1)
    model = nn.ModuleDict({"rnn": rnn, "head": head})
    x, y = torch.randn(3, 12, 2), torch.randn(3, 12)

    def loss_fn(m, batch, state):
        out, state = m["rnn"](batch["x"], state)
        return (m["head"](out).squeeze(-1) - batch["y"]).pow(2).mean(), state

    oracle = nn.ModuleDict({"rnn": nn.GRU(2, 5, batch_first=True), "head": nn.Linear(5, 1)})
    oracle.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(oracle.parameters(), lr=0.1)
    h = None
    for s in range(0, 12, 4):  # by hand: 4-step windows, one update each, detach between
        loss, h = loss_fn(oracle, {"x": x[:, s : s + 4], "y": y[:, s : s + 4]}, h)
        opt.zero_grad()
        loss.backward()
        opt.step()
        h = h.detach()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, tbptt_k1=4)
    res = Trainer(model, [{"x": x, "y": y}], cfg, loss_fn=loss_fn).fit()
    assert res.steps == 3
    for p, q in zip(model.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert TBPTT(4).windows(12)[-1] == (8, 8, 12)


def test_default_loss_conventions_and_bad_loss():
    class WithLoss(Linear):
        def loss(self, batch):
            return {"loss": self(batch["x"], batch["y"])}

    class Kw(Linear):
        def forward(self, x, y):
            return super().forward(x, y), "extra"  # tuple: loss first

    data = [{"x": b[0], "y": b[1]} for b in batches(2)]
    assert Trainer(WithLoss(), data, TrainConfig()).fit().steps == 2
    assert Trainer(Kw(), data, TrainConfig()).fit().steps == 2
    with pytest.raises(TypeError, match="scalar loss"):
        Trainer(Linear(), batches(1), TrainConfig(), loss_fn=lambda m, b: torch.ones(2)).fit()


def test_bf16_autocast_runs_the_forward_in_bfloat16():
    seen = []

    def loss_fn(model, batch):
        out = model.lin(batch[0])
        seen.append(out.dtype)
        return (out.squeeze(-1).float() - batch[1]).pow(2).mean()

    res = Trainer(Linear(), batches(2), TrainConfig(bf16=True), loss_fn=loss_fn).fit()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert all(math.isfinite(r["loss"]) for r in res.history)
    assert next(Linear().parameters()).dtype == torch.float32


def mse(model, batch):
    return (model(batch[0]).squeeze(-1) - batch[1]).pow(2).mean()


def test_seed_and_deterministic_mode_repeat_runs_exactly():
    def run():
        torch.manual_seed(3)
        m = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
        cfg = TrainConfig(epochs=2, seed=5, deterministic=True)
        res = Trainer(m, batches(3), cfg, loss_fn=mse).fit()
        return [r["loss"] for r in res.history]

    try:
        assert run() == run()
    finally:
        torch.use_deterministic_algorithms(False)


def test_metrics_csv_progress_bar_and_optional_tensorboard(tmp_path):
    cfg = TrainConfig(metrics_file=str(tmp_path / "m.csv"), progress=True,
                      tensorboard_dir=str(tmp_path / "tb"), max_steps=3, epochs=None)  # fmt: skip
    res = Trainer(Linear(), batches(2), cfg).fit()
    rows = MetricsFile.read(tmp_path / "m.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in res.history])
    assert all(r["samples_per_s"] > 0 and r["grad_norm"] > 0 for r in rows)
    try:
        import tensorboard  # noqa: F401

        assert TensorBoard(tmp_path / "tb2").available
    except ImportError:
        assert not TensorBoard(tmp_path / "tb2").available


@pytest.mark.parametrize("stateful", [True, False])
def test_stateful_carries_detached_state_across_batches_and_resets_each_epoch(stateful):
    seen = []
    rnn = nn.RNN(1, 3, batch_first=True)

    def loss_fn(model, batch, state):
        seen.append(None if state is None else state.clone())
        out, state = model(batch["x"], state)
        return out.pow(2).mean(), state

    data = [{"x": torch.randn(2, 4, 1)} for _ in range(3)]
    cfg = TrainConfig(epochs=2, tbptt_k1=4, stateful=stateful, optimizer="sgd", lr=0.0)
    tr = Trainer(rnn, data, cfg, loss_fn=loss_fn)
    tr.fit()
    assert len(seen) == 6
    assert seen[0] is None and seen[3] is None  # every epoch starts fresh
    assert all(s is None or s.grad_fn is None for s in seen)  # carried state is detached
    if stateful:
        # lr = 0: the weights do not move, so batch i + 1 must start from batch i's final state
        for i in (0, 1, 3, 4):
            _, want = rnn(data[i % 3]["x"], seen[i])
            torch.testing.assert_close(seen[i + 1], want.detach())
    else:
        assert all(s is None for s in seen)


def test_on_eval_callbacks_eval_at_end_and_decay_on_stall():
    scores = iter([0.5, 0.2, 0.3, 0.1])
    seen = []
    cfg = TrainConfig(epochs=None, max_steps=7, eval_every=3, eval_at_end=True, lr=1.0,
                      optimizer="sgd", lr_decay_on_stall=0.5)  # fmt: skip
    tr = Trainer(Linear(), batches(8), cfg, val_data=[0],
                 metric_fn=lambda m, v: {"val_loss": next(scores)},
                 on_eval=[lambda t, rec, better: seen.append((rec["step"], better))])  # fmt: skip
    res = tr.fit()
    # evaluations at 3 and 6 on schedule, then the last weights at step 7
    assert seen == [(3, True), (6, True), (7, False)]
    assert [e["step"] for e in res.evals] == [3, 6, 7] and res.best_metric == 0.2
    assert tr.optimizer.param_groups[0]["lr"] == 0.5  # one stalled evaluation: halved
    tr2 = Trainer(Linear(), batches(8), TrainConfig(epochs=None, max_steps=6, eval_every=3,
                  eval_at_end=True), val_data=[0],
                  metric_fn=lambda m, v: {"val_loss": 1.0})  # fmt: skip
    assert [e["step"] for e in tr2.fit().evals] == [3, 6]  # no duplicate final evaluation


def test_linear_schedule_follows_steps_or_time_whichever_is_further():
    cfg = TrainConfig(epochs=None, max_steps=5, lr=1.0, schedule="linear", min_lr_ratio=0.2)
    res = Trainer(Linear(), batches(8), cfg).fit()
    # update k (from 0) uses 1 − 0.8 · k / 5
    assert [r["lr"] for r in res.history] == pytest.approx([1 - 0.8 * k / 5 for k in range(5)])

    def slow_loss(model, batch):
        time.sleep(0.05)
        return model(*batch)

    cfg = TrainConfig(epochs=None, max_steps=10_000, time_budget_s=0.5, lr=1.0,
                      schedule="linear", min_lr_ratio=0.0)  # fmt: skip
    res = Trainer(Linear(), batches(3), cfg, loss_fn=slow_loss).fit()
    lrs = [r["lr"] for r in res.history]
    # the first update comes after one 0.05 s step: 1 − 0.05 / 0.5 = 0.9 (or a little less)
    assert 0.7 < lrs[0] <= 0.9 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.5  # driven by time: far below 1 − k/10000
    with pytest.raises(ValueError, match="linear"):
        Trainer(Linear(), batches(3), TrainConfig(epochs=1, schedule="linear"))


def test_cpu_clock_counts_work_not_sleep():
    def sleepy_loss(model, batch):
        time.sleep(0.05)  # wall time passes, this process's CPU time barely does
        return model(*batch)

    cfg = TrainConfig(epochs=None, max_steps=12, time_budget_s=0.2, clock="cpu")
    res = Trainer(Linear(), batches(3), cfg, loss_fn=sleepy_loss).fit()
    assert res.stopped == "max_steps"  # 0.6 s of wall time, far under 0.2 s of CPU
    wall = TrainConfig(epochs=None, max_steps=12, time_budget_s=0.2, clock="wall")
    assert Trainer(Linear(), batches(3), wall, loss_fn=sleepy_loss).fit().stopped == "time_budget"
    with pytest.raises(ValueError, match="clock"):
        TrainConfig(clock="moon").validate()
