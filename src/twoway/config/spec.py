"""What an option is: :class:`OptionSpec`, and :func:`option`, which declares one as a field of
:class:`~twoway.config.table.Settings` so its key, type and default are written once."""

from __future__ import annotations

from dataclasses import Field, dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["ENV_PREFIX", "Kind", "OptionSpec", "option", "spec_of"]

ENV_PREFIX = "TWOWAY_"

#: How a raw value (a TOML value, an environment variable, a flag) is parsed.
Kind = Literal[
    "int", "float", "size", "duration", "bool", "str", "choice", "keepalive", "path", "list"
]

T = TypeVar("T")

# The key under which a Settings field keeps the rest of its OptionSpec.
_META = "twoway.option"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option: ``key`` is the flag/TOML name (``max-line``), also the ``TWOWAY_`` environment
    variable once upper-cased with ``_``."""

    key: str
    kind: Kind
    default: Any
    help: str
    #: Only services whose registry entry names this key take it (``--history`` is chat's);
    #: otherwise it applies to every service (``--port``). Which services: their business.
    per_service: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: ``0`` (or ``off``) means "no limit" and is stored as ``None``.
    zero_disables: bool = False
    #: Flag spelling when it is not ``--KEY VALUE`` (booleans: ``--no-delay/--delay``).
    flag: str | None = None
    metavar: str | None = None

    @property
    def attr(self) -> str:
        """The :class:`~twoway.config.table.Settings` attribute name."""
        return self.key.replace("-", "_")

    @property
    def env(self) -> str:
        """The environment variable."""
        return ENV_PREFIX + self.attr.upper()


def option(
    kind: Kind,
    default: T,
    help: str,
    *,
    per_service: bool = False,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    zero_disables: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
) -> T:
    """Declare a :class:`~twoway.config.table.Settings` field as an option; the field's name
    gives the key (``max_line`` is ``max-line``) and ``default`` its default."""
    rest = {
        "kind": kind,
        "help": help,
        "per_service": per_service,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "zero_disables": zero_disables,
        "flag": flag,
        "metavar": metavar,
    }
    return field(default=default, metadata={_META: rest})


def spec_of(f: Field[Any]) -> OptionSpec | None:
    """The option a dataclass field declares, or ``None`` for a plain field."""
    rest = f.metadata.get(_META)
    if rest is None:
        return None
    return OptionSpec(key=f.name.replace("_", "-"), default=f.default, **rest)
