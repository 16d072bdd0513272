"""The README's Python snippet runs as written (on scikit-learn's bundled digits, in seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippet() -> str:
    section = README.read_text(encoding="utf-8").split("## Use it from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "no ```python block under '## Use it from Python'"
    return match.group(1)


@pytest.mark.usefixtures("isolated_data", "one_thread")
def test_readme_python_snippet_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(python_snippet(), str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:3]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert out[3].startswith("test error ")
    summary = json.loads((tmp_path / "runs" / "python-api" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["dataset"]["name"] == "digits"
    assert float(out[4].split()[0]) == summary["final"]["test_error"]
