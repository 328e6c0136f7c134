"""The local peer's links: which connections exist, which are kept, and why.

Owns the connections of one router (``conns``: every link, handshaking or not)
and its established links (``links``: one per neighbour name), the link filter,
the bound on connections stuck in the handshake, and the rules that decide which
link to keep: refusals (ourselves, a name collision, the filter, an older life
of a peer) and the deterministic tie-break between duplicate links.  It is the
``LinkOwner`` of every link (Weave Mesh: local_peer.go).

A link enters ``links`` only once both sides accepted its handshake (wire.py),
so a peer that refused a link never appears there, not even for a moment.  It
must never send anything itself or touch the topology: it tells the router
that a neighbour came or went (``on_up`` / ``on_down``), and tells the
connection maker how a dial ended.  Messages of established links go straight
to the router's dispatcher (``message``, bound once: no extra hop per message).

See docs/architecture.md#mesh.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from meshraft.mesh.connection import ESTABLISHED, Link, LinkConfig, ReadBatch
from meshraft.mesh.peer import check_name

if TYPE_CHECKING:
    from meshraft.mesh.connection_maker import ConnectionMaker

MAX_PENDING_LINKS = 64  # connections still in the handshake, at most

# Why a connection ended before its handshake completed, as a small fixed set (a metric
# label: never the free text of the reason). Matched on the reasons connection.py and
# this module give; anything else is "protocol" (a malformed or unexpected frame).
HANDSHAKE_FAILURE_KINDS = ("timeout", "version", "password", "self", "duplicate",
                           "refused", "overload", "closed", "protocol")
_HANDSHAKE_REASONS = (
    ("handshake timeout", "timeout"), ("protocol version mismatch", "version"),
    ("password mismatch", "password"), ("authentication failed", "password"),
    ("connected to ourselves", "self"), ("duplicate link", "duplicate"),
    ("name collision", "refused"), ("older life", "refused"), ("link filter", "refused"),
    ("is reserved", "refused"), ("router stopping", "refused"),
    ("connections in handshake", "overload"), ("closed by peer", "closed"),
    ("truncated frame", "closed"),
)


def handshake_failure_kind(reason: str | None) -> str:
    """One of HANDSHAKE_FAILURE_KINDS for a handshake's close reason."""
    if not reason:
        return "closed"
    for text, kind in _HANDSHAKE_REASONS:
        if text in reason:
            return kind
    return "protocol"


class LocalPeer:
    """The links of one router, and the decisions about them (a ``LinkOwner``)."""

    def __init__(self, name: str, uid: int, log: logging.LoggerAdapter, stats: Counter[str],
                 on_message: Callable[[Link, Any], None], on_up: Callable[[Link], None],
                 on_down: Callable[[Link], None]) -> None:
        self.name = name
        self.uid = uid
        self.log = log
        self.stats = stats
        self.message = on_message  # LinkOwner.message: the router's dispatcher itself
        self.on_up = on_up
        self.on_down = on_down
        self.links: dict[str, Link] = {}  # established, one per neighbour (never replaced)
        self.conns: set[Link] = set()  # every open connection, handshaking or not
        self.batch = ReadBatch()
        self.link_filter: frozenset[str] = frozenset()
        self.stopped = False
        self.cfg: LinkConfig | None = None  # set by the router once it listens
        self.maker: ConnectionMaker | None = None  # set by the router
        self._conn_seq = 0

    def new_link(self, outbound: bool, target: tuple[str, int] | None = None) -> Link:
        """A link for a new connection (the protocol of an accepted or dialled socket)."""
        assert self.cfg is not None, "the router is not listening yet"
        self._conn_seq += 1
        return Link(self, self.cfg, self.batch, outbound,
                    (self.uid ^ self._conn_seq) & ((1 << 64) - 1), target)

    def set_link_filter(self, names: Iterable[str]) -> None:
        """Refuse links to and from these peers; close the ones that exist now."""
        self.link_filter = frozenset(check_name(n) for n in names)
        for link in list(self.conns):
            if link.remote_name in self.link_filter:
                link.fail(f"peer {link.remote_name} is in the link filter", level=logging.INFO)

    def close_all(self) -> None:
        self.stopped = True
        for link in list(self.conns):
            link.close("router stopping", level=logging.DEBUG)

    def busy_addresses(self) -> set[tuple[str, int]]:
        """Addresses a connection exists to or from (nobody dials them again)."""
        busy: set[tuple[str, int]] = set()
        for link in self.conns:
            for a in (link.target, link.remote_listen):
                if a is not None:
                    busy.add(a)
        return busy

    # ----- LinkOwner -------------------------------------------------------
    def opened(self, link: Link) -> None:
        if self.stopped:
            link.fail("router stopping", level=logging.DEBUG)
            return
        if len(self.conns) - len(self.links) >= MAX_PENDING_LINKS:
            # bounded: a flood of connections that never finish the handshake
            self.stats["pending_refused"] += 1
            link.fail(f"more than {MAX_PENDING_LINKS} connections in handshake", logging.DEBUG)
            return
        self.conns.add(link)

    def ready(self, link: Link) -> str | None:
        """Accept the link (None) or say why it is refused.  Asked when the peer's
        identity arrives and again when it accepted us; it decides only, the loser
        of a tie-break that this link wins is closed in ``established``."""
        refusal = self._refusal(link)
        if refusal is not None:
            self.stats["links_refused"] += 1
        return refusal

    def _refusal(self, link: Link) -> str | None:
        name, uid = link.remote_name, link.remote_uid
        assert name is not None
        if self.stopped:
            return "router stopping"
        if name == self.name:
            if uid == self.uid:
                if self.maker is not None:
                    for a in (link.target, link.remote_listen):
                        if a is not None:
                            self.maker.add_self_address(a)
                return "connected to ourselves"
            return f"peer name collision: another peer (uid {uid:016x}) also calls itself {name}"
        if name in self.link_filter:
            return f"peer {name} is in the link filter"
        if name.startswith("_"):
            return f"peer name {name!r} is reserved"
        existing = self.links.get(name)
        if existing is None or existing is link:
            return None
        if existing.remote_uid != uid:
            if (link.remote_incarnation, uid) > (existing.remote_incarnation,
                                                 existing.remote_uid):
                return None  # the existing link is to an older life: it goes
            return f"older life of peer {name} (uid {uid:016x})"
        if existing.initiator != link.initiator and min(
                existing.initiator, link.initiator) == existing.initiator:
            return f"duplicate link to {name}: keeping the one {existing.initiator} dialled"
        return None

    def established(self, link: Link) -> None:
        name = link.remote_name
        assert name is not None
        existing = self.links.pop(name, None)
        if existing is not None:  # ready() said this link wins over it
            if existing.remote_uid != link.remote_uid:
                existing.close(f"peer {name} restarted (new uid {link.remote_uid:016x})")
            else:
                existing.close(
                    f"duplicate link to {name}: keeping the one {link.initiator} dialled")
        self.links[name] = link
        if self.maker is not None:
            self.maker.link_established(link)
        self.log.info("link up %s uid %016x protocol v%s%s", link.describe(), link.remote_uid,
                      link.version, " encrypted" if link.encrypted else "")
        self.stats["links_established"] += 1
        self.on_up(link)

    def closed(self, link: Link, was: str) -> None:
        self.conns.discard(link)
        name = link.remote_name
        if link.established_at is None and not self.stopped:
            self.stats["handshake_failed:" + handshake_failure_kind(link.close_reason)] += 1
        if name is not None and self.links.get(name) is link:
            del self.links[name]
            self.log.log(logging.DEBUG if self.stopped else logging.INFO, "link down %s: %s",
                         link.describe(), link.close_reason)
            self.stats["links_lost"] += 1
            if self.maker is not None:
                self.maker.link_lost(link)
            self.on_down(link)
        elif link.established_at is None and link.outbound and link.target is not None:
            if self.maker is not None:
                self.maker.dial_failed(link.target, link.close_reason or "handshake failed")
        elif (link.established_at is None and not self.stopped and link.close_reason
              and link.close_reason.startswith("truncated frame")):
            # A frame that fail() never saw (the peer hung up mid-frame): say so too.
            self.log.info("connection %s ended in the handshake: %s", link.describe(),
                          link.close_reason)

    # ----- liveness ----------------------------------------------------------
    def check_liveness(self, now: float, timeout: float, starved: bool,
                       heartbeat: bytes) -> None:
        """Close links silent (or handshaking) for longer than ``timeout``; send a
        heartbeat on the others.  ``starved``: this process itself was late, so
        silence is judged on the next tick only."""
        for link in list(self.conns):
            if link.state == ESTABLISHED:
                if now - link.last_recv > timeout and not starved:
                    self.stats["link_timeouts"] += 1
                    link.fail(f"heartbeat timeout: silent for {now - link.last_recv:.2f}s")
                    continue
                link.send(heartbeat)
            elif now - link.created > timeout and not starved:
                link.fail(f"handshake timeout after {now - link.created:.2f}s")

    def status(self) -> dict[str, Any]:
        """Every connection as plain data, keyed by neighbour (or pending:<conn id>)."""
        now = time.monotonic()
        links = {}
        for link in sorted(self.conns, key=lambda lk: (lk.remote_name or "", lk.conn_id)):
            entry = {
                "state": link.state, "direction": "outbound" if link.outbound else "inbound",
                "remote": f"{link.peername[0]}:{link.peername[1]}" if link.peername else None,
                "uid": f"{link.remote_uid:016x}" if link.remote_uid else None,
                "protocol_version": link.version, "encrypted": link.encrypted,
                "idle_s": round(now - link.last_recv, 3),
                "frames_in": link.frames_in, "frames_out": link.frames_out,
                "bytes_in": link.bytes_in, "bytes_out": link.bytes_out,
                "dropped_out": link.dropped_out,
            }
            key = link.remote_name if (link.state == ESTABLISHED and link.remote_name) else (
                f"pending:{link.conn_id:x}")
            links[key] = entry
        return links
