"""The server's HTTP protocol for uvicorn: one write per answer, and the limits a client must keep.

    protocol = transport.http_protocol(transport.Limits(max_body_bytes=4 << 20))
    uvicorn.run(app, http=protocol, ws="none")      # `pipelines.serve` sets it from its flags

Limits (`Limits`; each a flag of `pipelines.serve`), enforced before the app sees a request:
  - max_body_bytes: a Content-Length over it is answered 413 as soon as the headers are in (before
    the body is sent: no "100 Continue"); a chunked body is counted as it arrives and cut off with
    413 at the limit. The app never holds more than the limit.
  - max_header_bytes: a request line and headers over it get 431 (414 for the URL alone), also
    while they still arrive: httptools has no limit of its own and buffers a header until its end.
  - read_timeout: a request whose headers and body have not all arrived this long after its first
    bytes came in gets 408 (a client that sends part of a request, then nothing).
  - idle_timeout: a connection with no request under way (a new one too) is closed after this long
    (uvicorn arms its keep-alive timer only after an answer, so a silent new client stayed forever).
  - max_connections: a connection over it is answered 503 and closed at once.
Every refusal, and every request httptools cannot parse, gets a JSON {"error": ...} and closes the
connection (what follows on it cannot be trusted to start a request); its answer is sent, then what
the client still sends is read and dropped for a moment so the client sees the answer, not a reset.
Each refusal is one log line (client text escaped), and a client that goes away in the middle of a
request is one line too.

Writes: uvicorn writes a response's status line and headers, then its body, as two
`transport.write` calls: two `send` syscalls, and on loopback two wake-ups of the client, which
reads the headers, goes back to sleep, and wakes again for the body. On a small host where server
and clients share the cores, every extra wake-up is a context switch in the latency of some request
(`make bench ONLY=serving`). Here the writes one event-loop step makes are joined and leave as one
send at the end of that step, as servers that `writev` headers and body together do.

The per-request cost of the limits is a few counters and comparisons: no timer is armed for a
request that arrives in one read, which is what a predict body of a few kB does.
"""
from __future__ import annotations

import asyncio
import dataclasses

import httptools
import orjson
from absl import logging
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from uma2_tf.serving import monitoring

# After a refusal, how long and how much of what the client still sends is read and dropped before
# the connection closes: closing with unread bytes makes the kernel send a reset, which can reach
# the client before it has read the answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one client may send and hold (see the module docstring); sizes in bytes, times in s."""

  max_body_bytes: int = 4 << 20
  max_header_bytes: int = 16 << 10
  read_timeout: float = 10.0
  idle_timeout: float = 30.0
  max_connections: int = 500

  def __post_init__(self):
    for name in ("max_body_bytes", "max_header_bytes", "read_timeout", "idle_timeout",
                 "max_connections"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


class CoalescingTransport:
  """Wraps an asyncio transport: the writes made within one event-loop step go out as one.

  Everything but writing is the wrapped transport's (flow control, addresses, closing). Pending
  bytes are sent before the transport closes, and dropped if it is aborted, as the transport's own
  buffer would be.
  """

  def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
    self._transport = transport
    self._loop = loop
    self._pending: list[bytes] = []

  def write(self, data) -> None:
    if not self._pending:
      self._loop.call_soon(self._flush)
    self._pending.append(bytes(data))

  def writelines(self, chunks) -> None:
    for chunk in chunks:
      self.write(chunk)

  def _flush(self) -> None:
    if self._pending:
      data = b"".join(self._pending)
      self._pending.clear()
      if not self._transport.is_closing():
        self._transport.write(data)

  def get_write_buffer_size(self) -> int:
    return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

  def close(self) -> None:
    self._flush()
    self._transport.close()

  def write_eof(self) -> None:
    self._flush()
    self._transport.write_eof()

  def abort(self) -> None:
    self._pending.clear()
    self._transport.abort()

  def __getattr__(self, name):
    return getattr(self._transport, name)


class _Refusal(Exception):
  """Raised in a parser callback to stop parsing; `data_received` answers it."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def _answer(status: int, message: str, default_headers) -> bytes:
  """A whole HTTP response {"error": message} that closes the connection."""
  body = orjson.dumps({"error": message})
  head = [STATUS_LINE[status]]
  for name, value in default_headers:
    head += [name, b": ", value, b"\r\n"]
  head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
              % len(body))
  if status == 503:
    head.append(b"retry-after: 1\r\n")
  return b"".join([*head, b"\r\n", body])


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
  """uvicorn's httptools protocol over a `CoalescingTransport`, keeping `limits`.

  `http_protocol(limits)` makes a subclass with other limits; this one has the defaults.
  """

  limits = Limits()

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.timeout_keep_alive = self.limits.idle_timeout
    self._in_message = False  # A request's first bytes came in, and not yet all of it.
    self._in_head = False  # ... and not yet all of its headers.
    self._head_fed = 0  # Bytes fed to the parser since the current head's first read.
    self._body_bytes = 0
    self._own_cycle = None  # The current request's cycle, once its headers are in.
    self._earlier_cycle = None  # The previous request's, if it was unanswered when this began.
    self._read_deadline: asyncio.TimerHandle | None = None
    self._refused = False  # Answered with an error: the rest of the connection is dropped.
    self._dropped = 0
    self._linger: asyncio.TimerHandle | None = None

  def connection_made(self, transport) -> None:  # type: ignore[override]
    super().connection_made(CoalescingTransport(transport, self.loop))
    if len(self.connections) > self.limits.max_connections:  # This one included.
      self._refuse(503, f"too many connections (max_connections={self.limits.max_connections}); "
                   "retry later")
      return
    # uvicorn arms its keep-alive timer only after an answer: a client that connects and sends
    # nothing would hold the connection forever.
    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                        self.timeout_keep_alive_handler)

  def data_received(self, data: bytes) -> None:
    if self._refused:  # Lingering: what the client still sends is dropped.
      self._dropped += len(data)
      if self._dropped > LINGER_BYTES:
        self.transport.close()
      return
    try:
      self.parser.feed_data(data)
    except httptools.HttpParserCallbackError as e:
      cause = e.__context__
      if isinstance(cause, _Refusal):
        self._refuse(cause.status, cause.message)
      else:  # uvicorn's own callbacks fail on what they cannot decode (a non-ASCII path, ...).
        self._refuse(400, f"invalid HTTP request ({type(cause).__name__})")
      return
    except httptools.HttpParserUpgrade:
      # This server speaks no other protocol (uvicorn runs with ws="none"): the request before the
      # upgrade is answered as usual, and the connection then closes.
      self._close_after_answer()
      return
    except httptools.HttpParserError as e:
      self._refuse(400, f"invalid HTTP request: {e}")
      return
    if self._in_message:
      if self._in_head:
        # A head still incomplete may sit in httptools' buffers: count what was fed for it (the
        # read it began in aside, which may hold the end of the previous request).
        if self._head_fed < 0:
          self._head_fed = 0
        else:
          self._head_fed += len(data)
          if self._head_fed > self.limits.max_header_bytes:
            self._refuse(431, "request line and headers exceed max_header_bytes="
                         f"{self.limits.max_header_bytes}")
            return
      if self._read_deadline is None:
        self._read_deadline = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

  # Parser callbacks. What they raise stops the parser; `data_received` answers it. They call the
  # base class's directly (not `super()`), and headers are looked at once, when all are in: this
  # runs for every request, and each extra Python call here is a fraction of a microsecond.

  def on_message_begin(self) -> None:
    cycle = self.cycle
    self._earlier_cycle = cycle if cycle is not None and not cycle.response_complete else None
    HttpToolsProtocol.on_message_begin(self)
    self._unset_keepalive_if_required()
    self._in_message = self._in_head = True
    self._head_fed, self._body_bytes, self._own_cycle = -1, 0, None

  def on_headers_complete(self) -> None:
    self._in_head = False
    limits = self.limits
    head_bytes, content_length = len(self.url), 0
    for name, value in self.headers:
      head_bytes += len(name) + len(value) + 4
      if name == b"content-length":  # llhttp checked it: digits, and a single value.
        content_length = int(value)
    if head_bytes > limits.max_header_bytes:
      if len(self.url) > limits.max_header_bytes:
        raise _Refusal(414, f"URL exceeds max_header_bytes={limits.max_header_bytes}")
      raise _Refusal(431, "request line and headers exceed max_header_bytes="
                     f"{limits.max_header_bytes}")
    if content_length > limits.max_body_bytes:
      raise _Refusal(413, f"request body of {content_length} bytes exceeds max_body_bytes="
                     f"{limits.max_body_bytes}")
    HttpToolsProtocol.on_headers_complete(self)
    self._own_cycle = self.cycle

  def on_body(self, body: bytes) -> None:
    self._body_bytes += len(body)
    if self._body_bytes > self.limits.max_body_bytes:  # A chunked body: no Content-Length told.
      raise _Refusal(413, f"request body exceeds max_body_bytes={self.limits.max_body_bytes}")
    HttpToolsProtocol.on_body(self, body)

  def on_message_complete(self) -> None:
    self._in_message = False
    if self._read_deadline is not None:
      self._read_deadline.cancel()
      self._read_deadline = None
    HttpToolsProtocol.on_message_complete(self)

  # Timeouts, refusals, disconnections.

  def _read_timed_out(self) -> None:
    self._read_deadline = None
    if self._in_message:
      self._refuse(408, f"the request did not arrive whole within read_timeout="
                   f"{self.limits.read_timeout:g}s")

  def _request_text(self) -> str:
    """'METHOD path' of the current request as far as it arrived, escaped for a log line."""
    if not self._in_message or not getattr(self, "url", b""):
      return "(no request line)"
    try:  # The method the parser read: from llhttp's fixed table, safe to log as it is.
      method = self.parser.get_method().decode("ascii")
    except Exception:  # noqa: BLE001  (no parser any more, or no method parsed)
      method = "?"
    return f"{method} {monitoring.escape(self.url.decode('latin-1'), 200)}"

  def _path(self) -> str | None:
    url = getattr(self, "url", b"") if self._in_message else b""
    return url.split(b"?", 1)[0].decode("latin-1") if url else None

  def _refuse(self, status: int, message: str) -> None:
    """Answers {"error": message} with `status`, then closes the connection."""
    if self._refused:
      return
    self._refused = True
    logging.warning("%s: refused %s with %d: %s", self._client_text(), self._request_text(), status,
                    message)
    monitoring.count_request(monitoring.endpoint_of(self._path()), status)
    self._cancel_timers()
    own = self._own_cycle if self._in_message else None
    if own is not None and own.response_started:
      # Already answered by an endpoint that does not read bodies (a GET with a body over the
      # limit): no second answer; the connection closes once the first is out.
      if own.response_complete:
        self._linger_close()
      else:
        own.keep_alive = False
      return
    if own is not None:  # Its app task waits for the body: it sees a disconnect, and its answer
      own.disconnected = True  # goes nowhere.
      own.message_event.set()
    self.pipeline.clear()  # Requests queued behind the refused one never start.
    for earlier in (self._earlier_cycle, self.cycle):
      if earlier is not None and earlier is not own and not earlier.response_complete and (
          not earlier.disconnected):
        # An earlier request on this connection is still being answered: the refusal cannot go
        # before its answer, so that answer is the connection's last.
        earlier.keep_alive = False
        return
    self.transport.write(_answer(status, message, self.server_state.default_headers))
    self._linger_close()

  def _linger_close(self) -> None:
    """Sends what is written, then FIN; what the client still sends is read and dropped (see
    LINGER_SECONDS) so that its kernel does not get a reset before it read the answer."""
    self.flow.resume_reading()
    if self.transport.can_write_eof():
      self.transport.write_eof()
      self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
    else:
      self.transport.close()

  def _close_after_answer(self) -> None:
    self._refused = True  # Nothing more is parsed on this connection.
    cycle = self.cycle
    if cycle is not None and not cycle.response_complete:
      cycle.keep_alive = False
    else:
      self.transport.close()

  def _client_text(self) -> str:
    return "%s:%d" % self.client if self.client else "client"

  def _cancel_timers(self) -> None:
    self._unset_keepalive_if_required()
    for timer in (self._read_deadline, self._linger):
      if timer is not None:
        timer.cancel()
    self._read_deadline = self._linger = None

  def connection_lost(self, exc: Exception | None) -> None:
    if not self._refused:
      cycle = self.cycle
      if self._in_message:  # The app never got the whole request: nobody else counts it.
        logging.info("%s went away before sending all of %s (%s)", self._client_text(),
                     self._request_text(), type(exc).__name__ if exc else "closed")
        monitoring.count_request(monitoring.endpoint_of(self._path()), 499)
      elif cycle is not None and not cycle.response_complete:
        logging.info("%s went away before its answer to %s %s", self._client_text(),
                     cycle.scope.get("method", "?"),
                     monitoring.escape(cycle.scope.get("path", ""), 200))
    self._cancel_timers()
    super().connection_lost(exc)


def http_protocol(limits: Limits) -> type[CoalescingHttpToolsProtocol]:
  """A `CoalescingHttpToolsProtocol` keeping `limits`, for uvicorn's `http=`."""
  return type("CoalescingHttpToolsProtocol", (CoalescingHttpToolsProtocol,), {"limits": limits})
