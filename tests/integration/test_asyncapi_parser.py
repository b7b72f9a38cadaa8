"""The generated AsyncAPI document passes the standard npm parser (.ci/asyncapi-check)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / ".ci" / "asyncapi-check"
HOW_TO_GET_NODE = (
    "The AsyncAPI check needs Node.js 18+ and npm on PATH (Debian: `apt-get install nodejs npm`); "
    "it installs @asyncapi/parser into .ci/.npm itself. This test is never skipped."
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm", "bash") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found. {HOW_TO_GET_NODE}")


def _dialer_schema(out: Path) -> None:
    script = Path(sys.executable).with_name("dialer")  # the installed console script
    entry = [str(script)] if script.is_file() else [sys.executable, "-m", "service"]
    command = [*entry, "schema", "--out", str(out)]
    done = subprocess.run(  # noqa: S603 - our own CLI, no shell
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (out / "asyncapi.yaml").is_file()


def _check(document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own check script, no shell
        ["bash", str(CHECK), str(document)],  # noqa: S607 - bash from PATH, like CI
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_generated_document_passes_the_standard_parser(tmp_path: Path) -> None:
    _require_node()
    _dialer_schema(tmp_path)
    done = _check(tmp_path / "asyncapi.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid AsyncAPI 3.0.0" in done.stdout


def test_the_check_fails_on_a_broken_document(tmp_path: Path) -> None:
    _require_node()
    _dialer_schema(tmp_path)
    document = tmp_path / "asyncapi.yaml"
    text = document.read_text()
    broken = text.replace("action: send", "action: shout", 1)
    assert broken != text
    document.write_text(broken)
    done = _check(document)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is invalid" in done.stderr
