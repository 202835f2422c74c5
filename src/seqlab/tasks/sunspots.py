"""Task ``forecast`` (alias ``sunspots``): one-step-ahead forecasting of a series (many-to-one);
by default the yearly sunspot numbers.

Data: 309 yearly values 1700-2008 from ``statsmodels``, or the user's CSV series. Split in time
order: the last 10 % of the values is the test period, the 10 % before it the validation
period (checkpoint choice), the rest trains. Each forecast of ``y_t`` reads the ``window`` true
values before t (which may lie in an earlier period), so every method sees the same history.
Metrics: RMSE and MAE over the test period. Baselines: seasonal naive ``ŷ_t = y_{t-season}``
(the ~11-year solar cycle) and an AR(p) model fitted by least squares on the training period.
Values are standardised with the training mean and standard deviation. Model:
:class:`seqlab.models.SequenceRegressor` over the window plus a linear "highway"
(:class:`Forecaster`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.data import read_series_csv
from seqlab.data.real import sunspots
from seqlab.models import SequenceRegressor
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.batches import ShuffledBatches
from seqlab.tasks.checks import BadSetting
from seqlab.tasks.memspan import memory_span_callback, plot_memory_span, record_memory_span
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_forecast, plot_grad_through_time, plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms


@dataclass
class SunspotsConfig(TaskConfig):
    window: int = 24  # past values each forecast reads
    hidden: int = 32  # units per recurrent layer
    layers: int = 1  # recurrent layers
    dropout: float = 0.0  # dropout between layers
    highway: bool = True  # add a linear (AR-like) path from the window to the forecast
    heads: int = 4  # attention heads (transformer only)
    batch_size: int = 16  # windows per optimiser step
    threads: int = 1  # torch threads: 1, at 4.5 k parameters a second thread only adds wake-ups
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 1e-4  # L2 weight decay of the optimiser
    epochs: int = 400  # passes over the training windows (or until the time budget)
    minutes: float = 3.0  # training budget in minutes
    eval_every: int = 25  # steps between evaluations
    patience: int = 30  # evaluations without improvement before stopping (0: never)
    season: int = 11  # period of the seasonal-naive baseline ŷ_t = y_{t−season} (solar cycle)
    ar_order: int = 9  # p of the AR(p) baseline fitted by least squares
    column: str = ""  # user CSV: value column by header name (empty: last column)


def load_series(cfg: SunspotsConfig) -> tuple[list[str], list[float]]:
    if cfg.data:
        return read_series_csv(cfg.data, cfg.column or None, cfg.encoding)
    years, values = sunspots()
    return [str(y) for y in years], values


def split_points(n: int) -> tuple[int, int]:
    """(first validation index, first test index) for a series of n values."""
    test = n - max(1, round(0.1 * n))
    val = test - max(1, round(0.1 * n))
    return val, test


def windows(y: torch.Tensor, w: int, targets: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (N, w) = the w values before each target index, and targets (N,)."""
    idx = [t for t in targets if t >= w]
    x = torch.stack([y[t - w : t] for t in idx]) if idx else torch.zeros(0, w)
    return x, y[idx]


def rmse_mae(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float]:
    err = pred - true
    return math.sqrt(float((err**2).mean())), float(err.abs().mean())


def fit_ar(y: torch.Tensor, p: int, end: int) -> torch.Tensor:
    """Least-squares AR(p) with intercept on y[:end]: coefficients (p + 1,)."""
    x, t = windows(y, p, range(p, end))
    design = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    return torch.linalg.lstsq(design, t[:, None].double()).solution[:, 0].float()


class Forecaster(nn.Module):
    """Window of W past values (B, W) -> next value (B,).

    ``ŷ = w_oᵀ h_W + b_o + aᵀ x``: a :class:`seqlab.models.SequenceRegressor` read of the
    window (recurrent, or a causal Transformer encoder) plus, when ``highway`` is on, a linear
    autoregressive term ``aᵀ x`` over the same window (the "highway" of LSTNet, Lai et al.
    2018), so the network only has to learn the non-linear part.
    """

    def __init__(self, cfg: SunspotsConfig) -> None:
        super().__init__()
        extra: dict[str, Any] = {"impl": cfg.impl}
        if cfg.model == "transformer":
            extra = {"nhead": cfg.heads, "max_len": cfg.window, "causal": True}
        self.net = SequenceRegressor(
            1, 1, hidden_size=cfg.hidden, num_layers=cfg.layers, cell=cfg.model,
            dropout=cfg.dropout, **extra,
        )  # fmt: skip
        self.highway = nn.Linear(cfg.window, 1) if cfg.highway else None

    def readout(self, h_last: Tensor, x: Tensor) -> Tensor:
        """ŷ (B,) from the network's last top-layer state (B, H) and the window x (B, W)."""
        y = self.net.head(self.net.drop(h_last))[:, 0]
        return y + self.highway(x)[:, 0] if self.highway is not None else y

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x[..., None])[:, 0]  # (B, W) -> (B, W, 1) -> (B,)
        return y + self.highway(x)[:, 0] if self.highway is not None else y


class SunspotsTask(Task):
    name = "forecast"
    description = "one-step-ahead forecasting (RMSE/MAE on the last 10 % of the series)"
    dataset = "sunspots"
    Config = SunspotsConfig
    metric = "val_rmse"
    higher_is_better = False

    def build(self, cfg: SunspotsConfig) -> Forecaster:
        model = Forecaster(cfg)
        init_forget_bias(model)
        return model

    def _prepare(self, cfg: SunspotsConfig):
        times, values = load_series(cfg)
        n = len(values)
        val_start, test_start = split_points(n)
        if val_start <= cfg.window + 1:
            raise ValueError(f"series of {n} values is too short for window={cfg.window}")
        if val_start - cfg.ar_order <= cfg.ar_order + 1:  # least squares needs rows > unknowns
            raise BadSetting(
                f"setting 'ar_order': expected < {(val_start - 1) // 2} for a training period "
                f"of {val_start} values, got {cfg.ar_order}"
            )
        if cfg.season > test_start:  # the naive forecast y[t - season] must exist (no wrap)
            raise BadSetting(
                f"setting 'season': expected <= {test_start} (the values before the test "
                f"period), got {cfg.season}"
            )
        y = torch.tensor(values, dtype=torch.float32)
        mean, std = float(y[:val_start].mean()), float(y[:val_start].std()) or 1.0
        return times, y, (y - mean) / std, mean, std, val_start, test_start

    def train(self, cfg: SunspotsConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            times, y, z, mean, std, val_start, test_start = self._prepare(cfg)
            n = len(y)
            info.detail = f"{n} values, test from {times[test_start]}"
        with phase(progress, "baseline fit", f"seasonal naive, AR({cfg.ar_order})"):
            base_val = self._baselines(cfg, y, range(val_start, test_start))
        best_base = min(base_val, key=lambda k: base_val[k][1][0])
        baseline(progress, best_base, base_val[best_base][1][0])
        native_build(progress, cfg.impl, cfg.model)
        xtr, ttr = windows(z, cfg.window, range(cfg.window, val_start))
        xva, tva = windows(z, cfg.window, range(val_start, test_start))
        xte, tte = windows(z, cfg.window, range(test_start, n))
        model = self.build(cfg)
        meta = {
            "task": self.name,
            "mean": mean,
            "std": std,
            "config": config_dict(cfg),
            "last_time": times[-1],
        }
        run.log(
            kind="info",
            train=len(ttr),
            valid=len(tva),
            test=len(tte),
            test_from=times[test_start],
            parameters=count_parameters(model),
        )

        def loss_fn(model, batch):
            x, t = batch
            return F.mse_loss(model(x), t)

        def evaluate():
            r, m = rmse_mae(model(xva) * std, tva * std)
            return {"val_rmse": r, "val_mae": m}

        batches = ShuffledBatches(
            len(ttr), cfg.batch_size, cfg.seed, lambda idx: (xtr[list(idx)], ttr[list(idx)])
        )
        span = memory_span_callback(cfg, run, progress, self._span_norms(xva, tva))
        result = fit(
            model,
            cfg,
            batches,
            loss_fn,
            evaluate,
            self.metric,
            False,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            epochs=cfg.epochs,
            tokens=lambda batch: batch[0].numel(),
            callbacks=[span] if span is not None else None,
        )
        with phase(progress, "evaluation", f"{len(tte)} test points"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            scores = self._scores(model, cfg, y, z, mean, std, test_start)
        summary = {
            "task": self.name,
            "model": cfg.model,
            "test_from": times[test_start],
            "test_points": len(tte),
            **scores,
            "val_rmse": result.best.get("val_rmse"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
        }
        summary["beats_both_baselines"] = summary["test_rmse"] < min(
            summary["seasonal_naive_rmse"], summary["ar_rmse"]
        ) and summary["test_mae"] < min(summary["seasonal_naive_mae"], summary["ar_mae"])
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            self._plots(model, cfg, run, times, y, z, mean, std, test_start, base_val)
        return summary

    @staticmethod
    def _span_norms(xva: Tensor, tva: Tensor):
        """``norms(model)`` for the memory span: ‖∂ℓ/∂h_t‖ over the first validation window,
        ℓ its one-step forecast's squared error (top recurrent layer)."""
        if len(tva) == 0:
            return None
        x1, t1 = xva[:1], tva[:1]

        def norms(model):
            flow = hidden_grad_norms(
                model.net.encoder.rnn,
                x1[..., None],
                lambda out, _s: F.mse_loss(model.readout(out[:, -1], x1), t1),
                batch_first=True,
            )
            return flow.h.tolist()

        return norms

    def _baselines(self, cfg, y: Tensor, period: range) -> dict[str, tuple[Tensor, tuple]]:
        """Seasonal naive and AR(p) forecasts of ``y[t]`` for t in ``period`` (AR fitted on the
        training period), each with its (RMSE, MAE) against the truth."""
        targets = [t for t in period if t >= cfg.window]
        true = y[targets]
        naive = torch.stack([y[t - cfg.season] for t in targets])
        val_start, _ = split_points(len(y))
        coef = fit_ar(y, cfg.ar_order, val_start)
        xa, _ = windows(y, cfg.ar_order, targets)
        ar = xa @ coef[:-1] + coef[-1]
        return {
            "seasonal naive": (naive, rmse_mae(naive, true)),
            f"AR({cfg.ar_order})": (ar, rmse_mae(ar, true)),
        }

    def _scores(self, model, cfg, y, z, mean, std, test_start) -> dict[str, float]:
        n = len(y)
        xte, tte = windows(z, cfg.window, range(test_start, n))
        with torch.no_grad():
            pred = model(xte) * std + mean
        true = tte * std + mean
        out = dict(zip(("test_rmse", "test_mae"), rmse_mae(pred, true), strict=True))
        base = self._baselines(cfg, y, range(test_start, n))
        out["seasonal_naive_rmse"], out["seasonal_naive_mae"] = base["seasonal naive"][1]
        out["ar_rmse"], out["ar_mae"] = base[f"AR({cfg.ar_order})"][1]
        return out

    def _plots(self, model, cfg, run, times, y, z, mean, std, test_start, base_val) -> None:
        plot_losses(
            run.events(),
            "val_rmse",
            run.path / "loss.png",
            f"{self.name} ({cfg.model}) on {self.data_name(cfg)}",
            baselines={name: scores[0] for name, (_, scores) in base_val.items()},
            metric_label="validation RMSE (series units)",
            loss_label="training MSE (standardised units)",
        )
        n = len(y)
        xte, tte = windows(z, cfg.window, range(test_start, n))
        if not len(xte):
            return
        with torch.no_grad():
            pred = model(xte) * std + mean
        base = self._baselines(cfg, y, range(test_start, n))
        forecasts = {f"{cfg.model} (ours)": pred.tolist()}
        forecasts.update({name: f.tolist() for name, (f, _) in base.items()})
        plot_forecast(
            times[test_start:],
            (tte * std + mean).tolist(),
            forecasts,
            run.path / "forecast.png",
            f"{self.name} on {self.data_name(cfg)}: one-step forecasts over the test period",
        )
        if cfg.model != "transformer":
            # How much the first test forecast's loss depends on each hidden state h_t.
            x1 = xte[:1]
            with torch.enable_grad():
                flow = hidden_grad_norms(
                    model.net.encoder.rnn,
                    x1[..., None],
                    lambda out, _s: F.mse_loss(model.readout(out[:, -1], x1), tte[:1]),
                    batch_first=True,
                )
            plot_grad_through_time(
                {"first test window": flow.h.tolist()},
                run.path / "grad_through_time.png",
                f"{cfg.model}: ‖∂ℓ/∂h_t‖ over the input window",
            )

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(SunspotsConfig, run)
        model = self.build(cfg)
        model.load_state_dict(weights)
        model.eval()
        return model, meta, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, meta, cfg = self.load(run)
        times, y, z, mean, std, _, test_start = self._prepare(cfg)
        return self._scores(model, cfg, y, z, meta["mean"], meta["std"], test_start)

    def predict(self, run: RunDir, inputs: list[str], steps: int = 5, **_: Any) -> list[str]:
        """Forecast ``steps`` values after the history (the dataset, or numbers given)."""
        model, meta, cfg = self.load(run)
        if inputs:
            try:
                history = [float(v) for v in inputs]
            except ValueError:
                raise BadSetting(
                    f"inputs: expected numbers (the recent history), got {inputs}"
                ) from None
            bad = [v for v, x in zip(inputs, history, strict=True) if not math.isfinite(x)]
            if bad:
                raise BadSetting(f"inputs: expected finite numbers, got {bad}")
            if len(history) < cfg.window:
                raise ValueError(
                    f"inputs: need at least window={cfg.window} values, got {len(history)}"
                )
        else:
            history = load_series(cfg)[1]
        z = [(v - meta["mean"]) / meta["std"] for v in history[-cfg.window :]]
        out = []
        with torch.no_grad():
            for k in range(1, steps + 1):
                nxt = float(model(torch.tensor([z[-cfg.window :]]))[0])
                z.append(nxt)
                out.append(f"+{k}\t{nxt * meta['std'] + meta['mean']:.2f}")
        return out
