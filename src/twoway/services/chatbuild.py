"""Building the chat service from the settings: the core, the bus, the store, the MOTD; and
applying the live settings (MOTD, flood control) on a reload."""

from __future__ import annotations

import secrets
from pathlib import Path

from twoway.bus import make_bus
from twoway.config import Settings
from twoway.errors import ConfigError, describe_oserror
from twoway.net.service import Service
from twoway.sansio.chat import ChatCore
from twoway.services.chat import TAIL, ChatService
from twoway.services.chatstore import open_memory

__all__ = ["build_chat", "read_motd", "reconfigure_chat"]


def read_motd(settings: Settings) -> str | None:
    """The text of ``settings.motd`` (``None`` without one); raises ConfigError."""
    if not settings.motd:
        return None
    try:
        return Path(settings.motd).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"motd: {settings.motd}: {describe_oserror(exc)}") from None


def reconfigure_chat(service: Service, settings: Settings) -> None:
    """Apply the live chat settings (MOTD, flood control) to a running ``service``: for the
    clients that connect from now on. Raises ConfigError (an unreadable MOTD) before
    changing anything."""
    assert isinstance(service, ChatService)
    motd = read_motd(settings)
    service.core.set_motd(motd)
    service.flood_rate = settings.flood_rate
    service.flood_burst = settings.flood_burst


def build_chat(settings: Settings) -> ChatService:
    """A :class:`ChatService` configured from ``settings``; bad values raise ConfigError."""
    motd = read_motd(settings)
    bus = make_bus(settings.bus)
    core = ChatCore(
        history=settings.history,
        history_bytes=settings.history_bytes,
        max_rooms=settings.max_rooms,
        motd=motd,
        cluster=bus.cluster,
        tail=TAIL,
        # Random, so a room whose history was lost (a restart in memory) is told apart.
        new_epoch=lambda: secrets.token_hex(4),
        resume_window=settings.resume_window,
        new_token=lambda: secrets.token_urlsafe(18),  # 144 bits: unguessable
    )
    memory = open_memory(settings, core, TAIL)
    return ChatService(
        core,
        flood_rate=settings.flood_rate,
        flood_burst=settings.flood_burst,
        bus=bus,
        paste_lines=settings.paste_lines,
        store=memory.store,
        records=memory.records,
        describe_store=memory.describe,
        sessions=memory.sessions,
    )
