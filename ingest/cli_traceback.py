"""The traceback `ingest run` shows when a job fails: the frames of the user's code.

A batch that fails raises `BatchFailedError` on the driver, chained (`__cause__`) to the
exception the user's function raised on a worker thread. Its message names the batch and
the operation; what the user needs next is where in their code it broke, without the
framework's scheduler and executor frames around it. Frames count as the user's when
they are in no package of this project and not in the Python installation (the
standard library and site-packages).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from pathlib import Path

# The distribution's packages sit side by side (a checkout or site-packages); the core
# names its siblings by directory, never by importing them (tests/unit/test_layering.py).
_PACKAGES = ("ingest", "offsets", "receivers", "direct")
_ROOT = Path(__file__).resolve().parent.parent


def _framework_dirs() -> tuple[str, ...]:
    dirs = {str(_ROOT / package) for package in _PACKAGES}
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if key in paths:
            dirs.add(str(Path(paths[key]).resolve()))
    return tuple(d + os.sep for d in dirs)


def _is_user_frame(filename: str, framework: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <string>, <frozen runpy>
        return False
    return not str(Path(filename).resolve()).startswith(framework)


def user_traceback(exc: BaseException) -> str | None:
    """The user's frames of the innermost exception that `exc` is chained to
    and that has any, formatted like Python's own traceback with the exception
    line; None if no such exception went through user code."""
    framework = _framework_dirs()
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    # The innermost (the user's own exception) first. `exc` itself is left out: its
    # frames are only the call into the framework (ssc.start()), and its message,
    # printed anyway, already names the stream or operation and where it was defined.
    for error in reversed(chain[1:]):
        frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_user_frame(f.filename, framework)]
        if frames:
            lines = ["Traceback of your code (most recent call last):\n"]
            lines.extend(traceback.format_list(frames))
            lines.extend(traceback.format_exception_only(type(error), error))
            return "".join(lines)
    return None


def print_user_traceback(exc: BaseException) -> None:
    text = user_traceback(exc)
    if text is not None:
        sys.stderr.write(text)
