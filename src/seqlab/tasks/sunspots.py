"""Task ``sunspots``: yearly sunspot numbers, one-step-ahead forecasting (many-to-one).

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
from seqlab.tasks.plots import plot_grad_through_time, plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms


@dataclass
class SunspotsConfig(TaskConfig):
    window: int = 24
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    highway: bool = True
    heads: int = 4
    batch_size: int = 16
    # A 4.5 k-parameter model: a second thread only adds wake-ups (ruinous on a busy machine).
    threads: int = 1
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 400
    minutes: float = 3.0
    eval_every: int = 25
    patience: int = 30
    season: int = 11
    ar_order: int = 9
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
    name = "sunspots"
    description = "yearly sunspot forecasting (RMSE/MAE on the last 10 % of years)"
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
        times, y, z, mean, std, val_start, test_start = self._prepare(cfg)
        n = len(y)
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
        )
        model.load_state_dict(run.load_model_files()[0])
        model.eval()
        summary = {
            "task": self.name,
            "model": cfg.model,
            "test_from": times[test_start],
            "test_points": len(tte),
            **self._scores(model, cfg, y, z, mean, std, test_start),
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
        run.write_summary(summary)
        plot_losses(
            run.events(),
            "val_rmse",
            run.path / "loss.png",
            f"{self.name} ({cfg.model}): training MSE (standardised) and validation RMSE",
        )
        if cfg.model != "transformer" and len(xte):
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
        return summary

    def _scores(self, model, cfg, y, z, mean, std, test_start) -> dict[str, float]:
        n = len(y)
        xte, tte = windows(z, cfg.window, range(test_start, n))
        with torch.no_grad():
            pred = model(xte) * std + mean
        true = tte * std + mean
        out = dict(zip(("test_rmse", "test_mae"), rmse_mae(pred, true), strict=True))
        targets = [t for t in range(test_start, n) if t >= cfg.window]
        naive = torch.stack([y[t - cfg.season] for t in targets])
        out["seasonal_naive_rmse"], out["seasonal_naive_mae"] = rmse_mae(naive, true)
        val_start, _ = split_points(n)
        coef = fit_ar(y, cfg.ar_order, val_start)
        xa, _ = windows(y, cfg.ar_order, targets)
        out["ar_rmse"], out["ar_mae"] = rmse_mae(xa @ coef[:-1] + coef[-1], true)
        return out

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
