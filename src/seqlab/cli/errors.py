"""Turn expected failures into one clear line (and exit status 1) instead of a traceback."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from typing import Any

import click


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
        except Exception as e:
            # imported here, not at the top: the CLI starts (and speaks) before torch loads
            from seqlab.data import DataFileError, DataPackageMissing

            if isinstance(e, DataFileError | DataPackageMissing):
                raise click.ClickException(str(e)) from e
            if not isinstance(e, subprocess.CalledProcessError):
                raise
            raise click.ClickException(f"command failed ({e.returncode}): {' '.join(e.cmd)}") from e

    return wrapper
