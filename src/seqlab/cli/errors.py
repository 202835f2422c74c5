"""Turn expected failures into one clear line (and exit status 1) instead of a traceback."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from typing import Any

import click

from seqlab.data import DataFileError, DataPackageMissing


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (DataFileError, DataPackageMissing, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
        except subprocess.CalledProcessError as e:
            raise click.ClickException(f"command failed ({e.returncode}): {' '.join(e.cmd)}") from e

    return wrapper
