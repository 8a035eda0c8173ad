"""Settings: declared once, filled from defaults < config file < environment < flags.

Every option is one field of :class:`Settings` (:mod:`twoway.config.table`): its key (the long
flag name, also the TOML key and, upper-cased with ``_``, the ``TWOWAY_`` environment
variable), its kind, default and help. The CLI builds its flags from :data:`OPTIONS`, so an
option cannot exist in one place and not another. This package imports nothing of twoway but
:mod:`twoway.errors`; the services declare which options they take.

Validation errors name the source, the key and the value::

    config file chat.toml: max-line = 'abc': not a size (use bytes, e.g. 65536 or 64KiB)
"""

from __future__ import annotations

from twoway.config.load import load_settings, read_config_file
from twoway.config.parse import KeepaliveSetting, metrics_address, parse_duration, parse_size
from twoway.config.server import MAX_LINE
from twoway.config.spec import ENV_PREFIX, OptionSpec
from twoway.config.table import BY_KEY, LIVE_KEYS, OPTIONS, Settings

__all__ = [
    "BY_KEY",
    "ENV_PREFIX",
    "LIVE_KEYS",
    "MAX_LINE",
    "OPTIONS",
    "KeepaliveSetting",
    "OptionSpec",
    "Settings",
    "load_settings",
    "metrics_address",
    "parse_duration",
    "parse_size",
    "read_config_file",
]
