"""Turn expected failures into one clear line instead of a traceback (``-v`` adds it).

Exit status: 1 a failure (data file, missing package, not a run folder), 2 a bad argument,
setting or input, 3 training diverged (the best model is kept), 128 + N stopped by signal N
(130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import traceback
from collections.abc import Callable
from typing import Any

import click

# torch-free modules only: the CLI starts (and speaks) before torch loads
from seqlab.tasks.checks import BadSetting
from seqlab.tasks.interrupt import EXIT_BAD_INPUT, EXIT_DIVERGED, Interrupted


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError)
        and ("can't allocate memory" in text or "not enough memory" in text)
    )


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("verbose"):
        return True
    return logging.getLogger().isEnabledFor(logging.INFO)


def _fail(err: BaseException, message: str, code: int) -> CliError:
    if _verbose():  # -v: show where it came from
        traceback.print_exception(err)
    return CliError(message, code)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            raise _fail(e, str(e), e.exit_code) from e
        except BadSetting as e:
            raise _fail(e, str(e), EXIT_BAD_INPUT) from e
        except (ValueError, FileNotFoundError) as e:
            raise _fail(e, str(e), 1) from e
        except subprocess.CalledProcessError as e:
            raise _fail(e, f"command failed ({e.returncode}): {' '.join(e.cmd)}", 1) from e
        except Exception as e:
            # imported here, not at the top: these modules load torch
            from seqlab.data import DataFileError, DataPackageMissing
            from seqlab.training.config import NonFiniteLossError

            if isinstance(e, NonFiniteLossError):
                raise _fail(e, f"training diverged: {e}", EXIT_DIVERGED) from e
            if isinstance(e, DataFileError | DataPackageMissing):
                raise _fail(e, str(e), 1) from e
            if isinstance(e, MemoryError | RuntimeError) and _out_of_memory(e):
                raise _fail(e, f"out of memory: {str(e).splitlines()[0][:200]}", 1) from e
            raise

    return wrapper
