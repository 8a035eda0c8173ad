"""Durable state of a chat server: room history, topics and records (accounts, bans, owners).

The SQLite store (:mod:`twoway.store.sqlite`, built by the history issue) keeps them on disk;
:class:`MemoryRecords` keeps them for one run (``--ephemeral`` and tests). Services hold a
:class:`Records` and never know which one they were given.
"""

from __future__ import annotations

from twoway.store.records import JSONValue, MemoryRecords, Records

__all__ = ["JSONValue", "MemoryRecords", "Records"]
