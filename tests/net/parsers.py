"""One request, three parsers: fleet's `reconciler.net.http1`, h11 and llhttp
(Node.js's parser, through httptools). Each answers a `Verdict`: accepted with
the decoded body and the bytes left after the message, or refused (an error,
or a message that never ends in the bytes given)."""

from __future__ import annotations

from dataclasses import dataclass

import h11
import httptools

from reconciler.net.http1 import (
    NONE,
    Body,
    HttpError,
    parse_request_head,
    request_framing,
    request_host,
    skip_empty_lines,
)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    body: bytes = b""
    rest: bytes | None = None  # bytes after the message (None: not known, llhttp)
    why: str = ""


def fleet(data: bytes) -> Verdict:
    """What both proxies do with these bytes: skip empty lines, find the head,
    parse it (one Host for HTTP/1.1), frame and decode the body."""
    i = skip_empty_lines(data)
    end = data.find(b"\r\n\r\n", i)
    if end < 0:
        return Verdict(False, why="no complete head")
    try:
        head = parse_request_head(data[i:end])
        if request_host(head) is None and head.version == b"1.1":
            raise HttpError(400, "no Host header")
        kind, length = request_framing(head)
        body = Body(kind, length)
        out: list[bytes] = []
        stop = end + 4 if kind == NONE else body.feed(data, end + 4, out)
    except HttpError as exc:
        return Verdict(False, why=str(exc))
    if stop < 0:
        return Verdict(False, why="incomplete body")
    return Verdict(True, b"".join(out), data[stop:])


def h11_verdict(data: bytes) -> Verdict:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return Verdict(False, why="incomplete")
            if isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return Verdict(True, body, bytes(conn.trailing_data[0]))
    except h11.RemoteProtocolError as exc:
        return Verdict(False, why=str(exc))


class _Collect:
    def __init__(self) -> None:
        self.body = b""
        self.done = False

    def on_body(self, data: bytes) -> None:
        if not self.done:
            self.body += data

    def on_message_complete(self) -> None:
        self.done = True


def llhttp_verdict(data: bytes) -> Verdict:
    sink = _Collect()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return Verdict(False, why="upgrade")
    except httptools.HttpParserError as exc:
        if sink.done:  # the first message ended well; what follows is another one
            return Verdict(True, sink.body)
        return Verdict(False, why=str(exc))
    if not sink.done:
        return Verdict(False, why="incomplete")
    return Verdict(True, sink.body)
