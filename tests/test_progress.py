"""What `seqlab train` shows: phases, the status line, both output modes, and thread choice."""

import io

import pytest

from seqlab.cli.progress import RunDisplay, TrainingStatus, clock_str, make_console
from seqlab.tasks.phases import baseline, phase
from seqlab.tasks.threads import auto_threads

LONG = "/very/long/run/folder/" + "x" * 250 + "/charlm-shakespeare-20260101-000000"


def events():
    """A short run: lower-is-better metric, budget 100 steps or 60 s, 200 tokens per step."""
    yield {"kind": "start", "max_steps": 100, "budget_s": 60.0, "metric": "val_nats",
           "higher_is_better": False}  # fmt: skip
    yield {"kind": "baseline", "name": "5-gram", "value": 2.6}
    yield {"kind": "train", "step": 10, "loss": 3.5, "tokens": 2000, "elapsed": 2.0}
    yield {"kind": "eval", "step": 10, "val_nats": 3.0, "elapsed": 2.1}
    yield {"kind": "train", "step": 20, "loss": 2.9, "tokens": 4000, "elapsed": 3.0}
    yield {"kind": "eval", "step": 20, "val_nats": 2.5, "elapsed": 3.1}
    yield {"kind": "train", "step": 30, "loss": 2.7, "tokens": 6000, "elapsed": 4.0}
    yield {"kind": "eval", "step": 30, "val_nats": 2.7, "elapsed": 4.1}


def test_status_numbers_by_hand():
    st = TrainingStatus()
    for e in events():
        st.update(e)
        if e["kind"] == "train" and e["step"] == 30:
            # recent rate: (6000 - 4000) tokens / (4.0 - 3.0) s; ETA: 70 steps at 4.0/30 s
            # each = 9.33 s, sooner than the 56 s left of the time budget
            assert st.rate == pytest.approx(2000.0)
            assert st.eta() == pytest.approx(70 * 4.0 / 30)
    assert st.best == (2.5, 20) and st.last == 2.7
    line = st.line()  # after the last evaluation (4.1 s): ETA 70 · 4.1 / 30 = 9.6 s
    for part in ("step 30/100", "0:04/1:00", "30%", "eta 0:10", "2.0k tok/s", "loss 2.7000",
                 "val_nats 2.7", "best 2.5 @20", "vs 5-gram -0.1 (better)"):  # fmt: skip
        assert part in line, (part, line)


def test_higher_is_better_best_and_delta():
    st = TrainingStatus()
    st.update({"kind": "start", "metric": "acc", "higher_is_better": True, "budget_s": 10.0})
    st.update({"kind": "baseline", "name": "naive Bayes", "value": 0.7})
    for step, acc in ((5, 0.6), (10, 0.8), (15, 0.75)):
        st.update({"kind": "eval", "step": step, "acc": acc, "elapsed": step / 10})
    assert st.best == (0.8, 10)
    assert "vs naive Bayes +0.1 (better)" in st.line()
    assert st.eta() == pytest.approx(10.0 - 1.5)
    assert st.fraction() == pytest.approx(0.15)


def test_clock_strings():
    assert [clock_str(s) for s in (0, 59.6, 61, 3600 + 62)] == ["0:00", "1:00", "1:01", "1:01:02"]


def test_pipe_mode_prints_plain_unwrapped_lines_and_phases():
    out = io.StringIO()
    console = make_console(file=out)
    assert not console.is_terminal
    ticks = iter([0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 6.0, 6.0])
    display = RunDisplay(console, every_s=10.0, clock=lambda: next(ticks))
    with phase(display, "data", "shakespeare") as info:
        info.detail = "1,000 chars"
    display.print(f"run folder {LONG}")
    with phase(display, "training"):
        evs = list(events())
        for e in evs[:3]:  # start, baseline, first train line (printed: first one)
            display(e)
        display({"kind": "train", "step": 11, "loss": 3.4, "tokens": 2200, "elapsed": 2.2})
        for e in evs[3:]:
            display(e)
    display.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b[" not in text  # no colours or cursor moves in a pipe
    assert f"run folder {LONG}" in lines  # 300+ characters, one line
    assert "data … shakespeare" in lines and "data done in" in text and "(1,000 chars)" in text
    assert lines[-1].startswith("training done in")
    assert "  same-split baseline 5-gram: 2.6" in lines
    status = [ln for ln in lines if ln.startswith("  step ")]
    # the step-10 line (first), none for step 11 (within every_s), one after each evaluation
    assert [ln.split(" · ")[0] for ln in status] == ["  step 10/100", "  step 10/100",
                                                   "  step 20/100", "  step 30/100"]  # fmt: skip
    assert sum(ln.startswith("  eval step") for ln in lines) == 3


def test_terminal_mode_draws_a_bar_and_marks_finished_phases():
    out = io.StringIO()
    console = make_console(file=out, force_terminal=True, width=100)
    display = RunDisplay(console)
    with phase(display, "data"):
        pass
    with phase(display, "training"):
        for e in events():
            display(e)
    display.close()
    text = out.getvalue()
    assert "\x1b[" in text  # a live display (cursor control) was drawn
    assert "✓ " in text and "data" in text and "done in" in text
    assert "step 30/100" in text and "best 2.5 @20" in text and "vs 5-gram" in text
    assert [n for n, _ in display.phases] == ["data", "training"]


def test_quiet_keeps_phase_bookkeeping_but_prints_nothing():
    out = io.StringIO()
    display = RunDisplay(make_console(file=out), quiet=True)
    with phase(display, "data"):
        baseline(display, "x", 1.0)
    with phase(display, "training"):
        for e in events():
            display(e)
    assert out.getvalue() == "" and display.started == {"data", "training"}


@pytest.mark.parametrize(
    ("requested", "load", "cores", "want", "notice"),
    [
        (0, 0.2, 2, 2, False),  # idle 2-core machine: the recipe's 2 threads
        (0, 1.8, 2, 1, True),  # busy: fall back to 1 and say so
        (0, 9.0, 2, 1, True),  # very busy: still at least 1
        (0, None, 2, 2, False),  # no load average on this platform
        (0, 0.0, 1, 1, False),  # one core: never more threads than cores
        (0, 13.2, 16, 2, False),  # 2.8 free cores of 16
        (0, 15.0, 16, 1, True),
        (3, 9.0, 2, 3, False),  # --threads wins, whatever the load
    ],
)
def test_thread_choice(requested, load, cores, want, notice):
    n, msg = auto_threads(requested, load=lambda: load, cores=lambda: cores)
    assert n == want and bool(msg) == notice
    if notice:
        assert "busy" in msg and "--threads" in msg and "\n" not in msg


def test_native_build_phase(monkeypatch):
    from seqlab.engine import native
    from seqlab.tasks.phases import native_build

    calls = []
    monkeypatch.setattr(native, "ensure_built", lambda: calls.append(1) or 0.0)
    monkeypatch.setattr(native, "status", lambda: {"available": True})
    seen = []
    native_build(seen.append, "seqlab", "lstm")
    assert calls == [1] and [e["state"] for e in seen] == ["start", "end"]
    assert seen[-1]["name"] == "native build" and seen[-1]["detail"] == "ready"
    monkeypatch.setattr(native, "status", lambda: {"available": False})  # build failed
    native_build(seen.append, "seqlab", "gru")
    assert seen[-1]["detail"].startswith("not available")
    seen.clear()
    native_build(seen.append, "torch", "lstm")  # torch.nn layers, or a Transformer: no phase
    native_build(seen.append, "seqlab", "transformer")
    assert seen == []


def test_the_command_starts_without_torch():
    """The first line of `seqlab train` is printed before torch loads (issue 19: within 2 s):
    importing the command line, and getting as far as the first phase line, imports no torch."""
    import subprocess
    import sys

    code = (
        "import sys, io\n"
        "import seqlab.cli as cli\n"
        "assert 'torch' not in sys.modules, 'import seqlab.cli loaded torch'\n"
        "from seqlab.cli.progress import RunDisplay, make_console\n"
        "seen = []\n"
        "class Stop(Exception): pass\n"
        "class Spy(RunDisplay):\n"
        "    def __call__(self, event):\n"
        "        seen.append(('torch' in sys.modules, event.get('name')))\n"
        "        raise Stop\n"
        "try:\n"
        "    spy = Spy(make_console(io.StringIO()))\n"
        "    cli.run_training('shakespeare', None, (), {}, 'runs', display=spy)\n"
        "except Stop:\n"
        "    pass\n"
        "assert seen == [(False, 'startup')], seen\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_memory_span_on_the_status_line_and_a_warning_line():
    from io import StringIO

    from rich.console import Console

    from seqlab.cli.progress import RunDisplay

    buf = StringIO()
    display = RunDisplay(Console(file=buf, width=300, force_terminal=False), every_s=0.0)
    display({"kind": "start", "max_steps": 10, "budget_s": 60, "metric": "val_nats"})
    display({"kind": "memory", "step": 2, "memory_span": 17, "grad_ratio": 1e-3, "warning": None})
    display({"kind": "train", "step": 2, "loss": 1.5, "grad_norm": 1.0, "lr": 1e-3, "elapsed": 1})
    display({"kind": "memory", "step": 4, "memory_span": 3, "grad_ratio": 1e-9,
             "warning": "vanishing"})  # fmt: skip
    display({"kind": "train", "step": 4, "loss": 1.4, "grad_norm": 1.0, "lr": 1e-3, "elapsed": 2})
    display.close()
    out = buf.getvalue()
    assert "memory span 17" in out and "memory span 3 (vanishing)" in out
    assert "warning: gradients vanishing through time at step 4" in out
