"""The checks that source packages add to `ingest checkpoint fsck` (and
`inspect`): each looks at what its package keeps under a checkpoint directory
(the receivers' write-ahead logs) and returns one message per problem.

A registry of its own, apart from the command (`ingest.checkpoint_cli`), so
that a source package's plugin registers its check without loading the
checkpoint code: a job without a checkpoint never needs it.
"""

from __future__ import annotations

from typing import Callable, Iterable

from ingest.sources import load_source_packages

FsckCheck = Callable[[str], Iterable[str]]
"""A check of a local checkpoint directory: returns one message per problem,
each naming the file (and offset) it is about."""

_checks: list[FsckCheck] = []


def register_fsck_check(check: FsckCheck) -> FsckCheck:
    """Run `check(directory)` in every `fsck`/`inspect`, after the core's own
    checks. Registering the same function twice runs it once. Usable as a decorator."""
    if check not in _checks:
        _checks.append(check)
    return check


def run_fsck_checks(directory: str) -> list[str]:
    """Every registered check's problems with `directory`, after loading the
    source packages (whose plugins register them). A check that raises is a
    finding naming it, not a crash of fsck."""
    load_source_packages()
    problems: list[str] = []
    for check in list(_checks):
        try:
            problems.extend(str(p) for p in check(directory))
        except Exception as exc:  # noqa: BLE001 - a failing check is a finding, not a crash of fsck
            problems.append(f"check {getattr(check, '__name__', check)} failed: {type(exc).__name__}: {exc}")
    return problems
