"""Creates (once) one virtual environment per peer from the pinned
requirements-<name>.txt beside this file, so no peer's packages touch the
project's environment or each other's. A venv is reused while its
requirements file is unchanged (its hash is in the venv's directory name)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("INGEST_BENCH_VENVS", Path.home() / ".cache" / "ingest-bench-peers"))


def venv_python(name: str, log=print) -> Path:
    """The python of the venv for requirements-`name`.txt, created if missing."""
    requirements = HERE / f"requirements-{name}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    home = ROOT / f"{name}-{digest}"
    python = home / "bin" / "python"
    if (home / ".complete").exists():
        return python
    log(f"creating venv {home} from {requirements.name} ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(requirements)], check=True)
    (home / ".complete").write_text(requirements.read_text())
    return python


if __name__ == "__main__":
    for name in sys.argv[1:] or ["bench", "quix", "bytewax", "faust", "pyspark"]:
        print(name, venv_python(name))
