"""The README's code is the examples' code: every complete python block is included
verbatim in a file of examples/ (which tests/integration/test_examples.py runs), and
every other python block is marked on its first line as a fragment naming its example:

    # fragment — see examples/kafka_to_sqlite.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = re.compile(r"#\s*fragment\b.*?\b(examples/[\w./-]+\.py)")


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(readme.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)]


def examples() -> dict[str, str]:
    return {f"examples/{p.name}": p.read_text(encoding="utf-8") for p in (ROOT / "examples").glob("*.py")}


def test_the_readme_has_python_blocks_and_complete_ones() -> None:
    blocks = python_blocks()
    assert blocks
    assert any(not FRAGMENT.match(code) for _, code in blocks), "no complete block: the block parser is broken"


def test_every_complete_readme_block_is_an_example_file_verbatim() -> None:
    files = examples()
    for line, code in python_blocks():
        if FRAGMENT.match(code):
            continue
        holders = [name for name, text in files.items() if code in text]
        assert holders, (f"README.md line {line}: this python block is in no file of examples/; copy it there "
                         f"verbatim (and run it in tests/integration/test_examples.py), or mark it with a first "
                         f"line `# fragment — see examples/<file>.py`:\n{code}")


def test_every_fragment_names_an_example_that_exists() -> None:
    files = examples()
    for line, code in python_blocks():
        match = FRAGMENT.match(code)
        if match:
            assert match.group(1) in files, f"README.md line {line}: the fragment names {match.group(1)}, not a file"
