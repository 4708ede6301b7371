"""README's first lines (issue 15, Done when): both install paths and a transcript of what `up` shows."""

from __future__ import annotations

import re

from tests.cli.helpers import REPO

README = (REPO / "README.md").read_text()
TOP = README.split("\n## Set-up", 1)[0]


def test_first_lines_show_both_install_paths() -> None:
    head = "\n".join(README.splitlines()[:30])
    assert "pipx install kprov" in head  # users
    assert "scripts/setup" in head  # the lab, from the repository


def test_top_section_has_a_transcript_of_up_with_its_progress_lines() -> None:
    blocks = re.findall(r"```text\n(.*?)```", TOP, re.S)
    assert blocks, "no ```text block before ## Set-up"
    transcript = blocks[0]
    for shown in (
        "ROLE ",
        "... still running: ",
        "uploading ",
        " took ",
        "RECAP",
        "total wall time:",
        "smoke test passed",
    ):
        assert shown in transcript, shown
    # never hard-wrapped: a log line is one line, however long
    assert any(len(line) > 100 for line in transcript.splitlines())
