"""``twoway.1``, the manual page, written from the click definitions of :mod:`twoway.cli`, so
it cannot drift from ``--help``: ``python -m twoway.manpage > twoway.1`` (then ``man -l
twoway.1``, or install it under ``share/man/man1``).
"""

from __future__ import annotations

import inspect
import sys

import click

from twoway._version import __version__

__all__ = ["render"]


def _roff(text: str) -> str:
    """``text`` safe in roff: backslashes doubled, a leading dot or quote escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        ("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs; click's ``\\b`` ones (kept as typed) in no-fill mode."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        if para.startswith("\b\n"):
            out += [".PP", ".nf", _roff(para[2:]), ".fi"]
        else:
            out += [".PP", _roff(para)]
    return out


def _command(ctx: click.Context, name: str, command: click.Command) -> list[str]:
    sub = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
    usage = " ".join(command.collect_usage_pieces(sub))
    out = [f".SS {_roff(f'twoway {name}')}", f".B twoway {_roff(name)}", _roff(usage)]
    out += _paragraphs(command.help or "")
    for param in command.get_params(sub):
        record = param.get_help_record(sub)
        if record is None or not record[1]:
            continue
        flags, text = record
        out += [".TP", f".B {_roff(flags)}", _roff(text)]
    return out


def render() -> str:
    """The whole page, in roff (``man 7 man``)."""
    from twoway.cli import cli

    ctx = click.Context(cli, info_name="twoway")
    lines = [
        f'.TH TWOWAY 1 "" "twoway {__version__}" "User Commands"',
        ".SH NAME",
        "twoway \\- persistent, bi\\-directional TCP services and a client for them",
        ".SH SYNOPSIS",
        ".B twoway serve",
        "[\\fISERVICE\\fR] [\\fIPATH\\fR] [\\fIPORT\\fR] [\\fIOPTIONS\\fR]",
        ".br",
        ".B twoway connect",
        "\\fIHOST\\fR [\\fIPORT\\fR] [\\fIOPTIONS\\fR]",
        ".br",
        ".B twoway check\\-config",
        "\\fIFILE\\fR [\\-\\-service \\fISERVICE\\fR]",
        ".SH DESCRIPTION",
        *_paragraphs(cli.help or ""),
        ".SH COMMANDS",
    ]
    assert isinstance(cli, click.Group)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        if command is not None:
            lines += _command(ctx, name, command)
    lines += [
        ".SH ENVIRONMENT",
        "Every option of \\fBserve\\fR is also \\fBTWOWAY_\\fIOPTION\\fR (upper case, \\- as _);",
        "every option of \\fBconnect\\fR is \\fBTWOWAY_CONNECT_\\fIOPTION\\fR.",
        ".SH EXIT STATUS",
        "0 after a graceful stop or when the server closed; 1 for a runtime failure;",
        "2 for a usage or configuration error; 128+N after signal N.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
