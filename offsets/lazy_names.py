"""Names a package resolves on first use (PEP 562): a package lists which
module defines each public name, and importing it loads none of them until a
name is used, so a job loads only what it touches. Shared by `offsets`,
`ingest.ui`, `receivers` and `direct`; `ingest` itself keeps its own copy,
since `import ingest` loads no other module of the project, not even this one."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module-level `__getattr__` of `package`: imports the module that
    `exports` names for an attribute, and stores the value in the package's
    `namespace` (its globals) so later look-ups do not come back here."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
