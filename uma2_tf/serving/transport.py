"""An HTTP protocol for uvicorn that sends each response in one write (`make serve` uses it).

    uvicorn.run(app, http=transport.CoalescingHttpToolsProtocol)

uvicorn writes a response's status line and headers, then its body, as two `transport.write`
calls: two `send` syscalls, and on loopback two wake-ups of the client, which reads the headers,
goes back to sleep, and wakes again for the body. On a small host where server and clients share
the cores, every extra wake-up is a context switch in the latency of some request (`make bench
ONLY=serving`). Here the writes one event-loop step makes are joined and leave as one send at the
end of that step, as servers that `writev` headers and body together do.
"""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
  """uvicorn's httptools protocol over a `CoalescingTransport`."""

  def connection_made(self, transport) -> None:  # type: ignore[override]
    super().connection_made(CoalescingTransport(transport, self.loop))
