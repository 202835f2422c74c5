"""MemorySpan with a caller's own measurement (``norms``) and the trainer's TensorBoard:
known-answer readings, no model needed."""

from __future__ import annotations

import pytest
from torch import nn

from seqlab.inspection.memory import MemorySpan


class FakeBoard:
    def __init__(self):
        self.logged = []

    def scalars(self, step, values):
        self.logged.append((step, values))


class FakeTrainer:
    def __init__(self, step, board=None):
        self.step, self.model, self.tensorboard = step, nn.Linear(1, 1), board


def test_norms_reading_known_answer_and_trainer_board():
    # g_t for t = 0..4; the last step carries 1.0; 0.02 and 0.5 stay >= 1 % of it, 1e-9 not
    curve = [1e-9, 0.02, 0.5, 0.9, 1.0]
    board = FakeBoard()
    span = MemorySpan(every=2, norms=lambda model: curve)
    span(FakeTrainer(1, board), {})  # not a multiple of every: nothing measured
    assert span.history == [] and board.logged == []
    span(FakeTrainer(2, board), {})
    (event,) = span.history
    assert event["memory_span"] == 3  # 0.9, 0.5, 0.02 counting back; 1e-9 breaks the run
    assert event["grad_ratio"] == pytest.approx(1e-9)
    assert event["warning"] == "vanishing"  # 1e-9 < 1e-6
    assert board.logged == [(2, {"memory_span": 3, "grad_ratio": pytest.approx(1e-9)})]


def test_exploding_and_model_restored_to_training_mode():
    trainer = FakeTrainer(4)
    seen = []

    def norms(model):
        seen.append(model.training)
        return [5e3, 1.0]

    span = MemorySpan(every=4, norms=norms)
    span(trainer, {})
    assert seen == [False] and trainer.model.training  # measured in eval mode, restored
    assert span.history[0]["warning"] == "exploding"


def test_needs_a_probe():
    with pytest.raises(ValueError, match="inputs and loss_fn, or norms"):
        MemorySpan(every=1)
