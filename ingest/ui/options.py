"""Whether and where a context serves its web UI.

The library's default is no UI. `ingest run` turns it on for the contexts the
application creates (at a free port, unless `--ui-port`, `--ui-host`,
`--ui-token` or `--no-ui` say otherwise) through `set_process_default`, since
the application builds its own `StreamingContext`: an explicit `ui_port=`
still wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ingest.errors import ConfigError

TOKEN_ENV = "INGEST_UI_TOKEN"


@dataclass(frozen=True)
class UIOptions:
    port: int
    """0: any free port."""
    host: str = "127.0.0.1"
    token: str | None = None
    announce: bool = False
    """Print the UI's address on stderr when it starts (what `ingest run` does)."""


_process_default: UIOptions | None = None


def set_process_default(options: UIOptions | None) -> None:
    """What contexts created without `ui_port=` use (set by `ingest run`)."""
    global _process_default
    _process_default = options


def resolve(port: int | None, host: str | None, token: str | None) -> UIOptions | None:
    """The UI a new context serves, or None; raises `ConfigError` on bad values."""
    if port is None:
        base = _process_default
        if base is None:
            if host is not None or token is not None:
                raise ConfigError("ui_host= and ui_token= need ui_port= (0 for any free port): the web UI is off "
                                  "unless a port is given")
            return None
        port = base.port
        host = host if host is not None else base.host
        token = token if token is not None else base.token
        announce = base.announce
    else:
        announce = False
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"ui_port must be a port number 0..65535 (0: any free port), got {port!r}")
    host = "127.0.0.1" if host is None else host
    if not isinstance(host, str) or not host:
        raise ConfigError(f"ui_host must be a host name or address to listen on, got {host!r}")
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None and (not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token)
                              or not token.isprintable()):
        raise ConfigError(f"ui_token (or {TOKEN_ENV}) must be a non-empty string without spaces")
    return UIOptions(port, host, token, announce)
