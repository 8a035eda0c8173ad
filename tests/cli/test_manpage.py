"""The manual page is written from the click definitions: every option is in it, and man
renders it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import click
import pytest

from twoway.cli import cli
from twoway.manpage import render


def test_every_option_of_every_command_is_in_the_page() -> None:
    page = render()
    assert page.startswith(".TH TWOWAY 1 ")
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        assert f".SS twoway {name.replace('-', chr(92) + '-')}" in page
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in param.opts:
                    assert flag.replace("-", "\\-") in page, (name, flag)
    assert "TWOWAY_CONNECT_KEEPALIVE" in page.replace("\\-", "-").replace("\\", "")


@pytest.mark.skipif(shutil.which("man") is None, reason="no man")
def test_man_renders_it(tmp_path: object) -> None:
    page = subprocess.run(
        [sys.executable, "-m", "twoway.manpage"], capture_output=True, text=True, check=True
    ).stdout
    path = f"{tmp_path}/twoway.1"
    with open(path, "w") as f:
        f.write(page)
    shown = subprocess.run(
        ["man", "-l", path],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "100", "MANPAGER": "cat", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.replace("\u2010", "-")
    assert "TWOWAY(1)" in text
    assert "--max-attempts N" in text
    assert "twoway serve [SERVICE] [PATH] [PORT]" in text
