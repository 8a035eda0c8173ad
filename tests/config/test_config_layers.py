"""Where configuration sits: the option table, the services' registry and the library apart.

``twoway.config`` imports nothing of twoway but ``errors``; the services say which options
they take; ``import twoway`` (the library) loads neither the CLI nor the option table.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import twoway.config
from twoway.config import MAX_LINE, OPTIONS, Settings, load_settings
from twoway.errors import ConfigError
from twoway.net.options import ConnectionOptions, Keepalive
from twoway.sansio.framing import DEFAULT_MAX_LINE
from twoway.services import SERVICES, check_settings, connection_options, service_options


def test_import_twoway_loads_neither_the_cli_nor_the_option_table() -> None:
    # In a child process: this test run has long imported both.
    code = "import sys, twoway; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "twoway.net" in loaded  # the probe saw the library
    for module in ("click", "twoway.cli", "twoway.config", "twoway.services"):
        assert module not in loaded, f"import twoway loaded {module}"


def test_config_imports_nothing_of_twoway_but_errors() -> None:
    package = Path(twoway.config.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "twoway" or name.startswith("twoway."):
                    assert name == "twoway.errors" or name.startswith("twoway.config"), (
                        f"{path.name} imports {name}"
                    )


def test_the_max_line_default_is_the_librarys() -> None:
    # Config may not import the decoder, so the CLI's default is its own constant: it must
    # stay the library's.
    assert Settings().max_line == MAX_LINE == ConnectionOptions().max_line == DEFAULT_MAX_LINE


def test_each_per_service_option_is_taken_by_a_service_and_only_those() -> None:
    per_service = {spec.key for spec in OPTIONS if spec.per_service}
    taken = {key for spec in SERVICES.values() for key in spec.options}
    assert taken == per_service


def test_settings_fields_are_the_table() -> None:
    assert [spec.attr for spec in OPTIONS] == [
        name
        for name in Settings.__dataclass_fields__
        # what loading recorded, and the [operators] table: not options
        if name not in ("service", "sources", "notices", "operators")
    ]
    defaults = Settings()
    for spec in OPTIONS:
        assert getattr(defaults, spec.attr) == spec.default


def _settings(**flags: object) -> Settings:
    return load_settings(
        service="chat", flags=flags, services=service_options(), validate=check_settings, environ={}
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("30", Keepalive(30, 10, 5)),
        ("5", Keepalive(5, 5, 5)),  # the probes never wait longer than the first
        ("30,3", Keepalive(30, 3, 5)),
        ("30,3,2", Keepalive(30, 3, 2)),
        (True, Keepalive()),  # TOML: keepalive = true
        ("0", None),
    ],
)
def test_keepalive_reaches_the_connection_options(raw: object, expected: Keepalive | None) -> None:
    assert connection_options(_settings(keepalive=raw)).keepalive == expected


def test_connection_options_carry_the_settings_and_the_services_overrides() -> None:
    options = connection_options(
        _settings(**{"max-line": "4KiB", "idle-timeout": "30", "no-delay": "false"})
    )
    assert (options.max_line, options.idle_timeout, options.nodelay) == (4096, 30.0, False)
    # chat's slow-consumer limits: the hard cap, and a quarter of it as the high-water mark.
    assert options.max_queued == 256 * 1024
    assert options.write_high == 64 * 1024


def test_the_services_check_how_values_go_together() -> None:
    with pytest.raises(ConfigError, match="needs a bus shared by the workers"):
        _settings(workers="2")
