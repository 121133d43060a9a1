"""How to install an optional extra, in the one wording every error message uses.

The command must work for both kinds of user: one who installed the package (`pip
install 'ingest[kafka]'`) and one who runs from a checkout, where that name would fetch
a different distribution from PyPI instead of installing the extra of the code at hand.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """e.g. "pip install 'ingest[kafka]' (from a checkout: pip install -e '.[kafka]')"."""
    return f"pip install 'ingest[{extra}]' (from a checkout: pip install -e '.[{extra}]')"
