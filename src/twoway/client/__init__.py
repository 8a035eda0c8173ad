"""``twoway connect``: the client for people and for scripts.

Modes, chosen by what standard input and output are:

* interactive (both are a terminal): :mod:`twoway.client.interactive`;
* pipe (stdin is not a terminal): :mod:`twoway.client.pipe`;
* periodic sender (``--send``): :mod:`twoway.client.sender`.

Each connection is a :class:`~twoway.client.link.Link` (reconnects, buffer, counters); several
run at once with names (``--connections``, ``--names``: :mod:`twoway.client.options`), each
printing with its ``[name]`` prefix (:mod:`twoway.client.output`, :mod:`twoway.client.status`).
:func:`run_client` (:mod:`twoway.client.main`) is the process. The library-level client is
:func:`twoway.connect`.
"""

from __future__ import annotations

from twoway.client.main import run_client
from twoway.client.options import ClientOptions

__all__ = ["ClientOptions", "run_client"]
