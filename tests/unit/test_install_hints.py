"""Every message that tells the user to install an extra gives a command that works for
both kinds of user: from PyPI (`pip install 'ingest[kafka]'`) and from a checkout
(`pip install -e '.[kafka]'`), in the one wording of `ingest.install_hint`."""

from __future__ import annotations

import re
from pathlib import Path

from ingest.install_hint import install_hint

ROOT = Path(__file__).resolve().parents[2]


def test_the_hint_names_the_package_form_and_the_checkout_form() -> None:
    assert install_hint("kafka") == "pip install 'ingest[kafka]' (from a checkout: pip install -e '.[kafka]')"


def test_no_message_spells_an_install_command_of_its_own() -> None:
    offenders = []
    for package in ("ingest", "receivers", "direct", "offsets"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "install_hint.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"pip install\s+'?ingest\[", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "use ingest.install_hint.install_hint(extra):\n" + "\n".join(offenders)
