"""The REST server against hostile or careless clients, and versions that arrive broken or slowly.

One server process (brute-force variant, small limits: 1 MB bodies, 8 kB headers, 2 s read and 3 s
idle timeouts, 30 connections) serves an export dir holding a good version 1 and a corrupt version
2; the tests talk to it over raw sockets where http.client would be too polite. They run in file
order: the last one repairs version 2 and copies a version 3 in slowly.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import socket
import threading
import time

import pytest

from test_serving import MODEL, call, expected_top_k, predict, random_tables, server_process
from test_serving import write_export

MAX_BODY, MAX_HEADER, READ_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS = 1_000_000, 8192, 2.0, 3.0, 30
PREDICT = f"/v1/models/{MODEL}:predict".encode()
ONE = {"instances": [{"user_id": 1}], "k": 5}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("exports"))
  write_export(path, seed=1, version=1)
  return os.path.join(path, "1")


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
  """(port, pid, log path, served dir): version 1 good, version 2's saved_model.pb cut in half."""
  served = str(tmp_path_factory.mktemp("served"))
  shutil.copytree(export_dir, os.path.join(served, "1"))
  shutil.copytree(export_dir, os.path.join(served, "2"))
  corrupt = os.path.join(served, "2", "brute_force_model", "saved_model.pb")
  with open(corrupt, "r+b") as f:
    f.truncate(os.path.getsize(corrupt) // 2)
  log_path = str(tmp_path_factory.mktemp("logs") / "server.log")
  with server_process(served, "brute_force_model", log_path, "--access_log",
                      f"--max_body_bytes={MAX_BODY}", f"--max_header_bytes={MAX_HEADER}",
                      f"--read_timeout={READ_TIMEOUT}", f"--idle_timeout={IDLE_TIMEOUT}",
                      f"--max_connections={MAX_CONNECTIONS}") as (port, process):
    yield port, process.pid, log_path, served


def connect(port: int, timeout: float = 10.0) -> socket.socket:
  return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket):
  """(status, headers, JSON body) of the HTTP response on `sock`."""
  response = http.client.HTTPResponse(sock)
  response.begin()
  body = response.read()
  headers = {k.lower(): v for k, v in response.getheaders()}
  assert headers.get("content-type") == "application/json", (response.status, headers, body)
  return response.status, headers, json.loads(body)


def send_raw(port: int, data: bytes):
  with connect(port) as sock:
    sock.sendall(data)
    return read_answer(sock)


def request_bytes(body: bytes, path: bytes = PREDICT, headers: bytes = b"") -> bytes:
  return (b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + headers
          + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def closed_within(sock: socket.socket, seconds: float) -> bool:
  """True if the server closes `sock` within `seconds` (what it still sends is skipped)."""
  sock.settimeout(seconds)
  try:
    while sock.recv(65536):
      pass
    return True
  except socket.timeout:
    return False
  except ConnectionResetError:
    return True


def rss_bytes(pid: int) -> int:
  with open(f"/proc/{pid}/status") as f:
    return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def wait_for_log(log_path: str, pattern: str, seconds: float = 10.0) -> str:
  deadline = time.time() + seconds
  while True:
    log = open(log_path, encoding="utf-8").read()
    if re.search(pattern, log) or time.time() > deadline:
      return log
    time.sleep(0.1)


def metric_values(port: int) -> dict:
  """{(sample name, sorted label items): value} of the metrics endpoint, parsed by
  prometheus_client's own parser."""
  from prometheus_client.parser import text_string_to_metric_families

  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
  connection.request("GET", "/monitoring/prometheus/metrics")
  response = connection.getresponse()
  text = response.read().decode()
  connection.close()
  assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
  return {(s.name, tuple(sorted(s.labels.items()))): s.value
          for family in text_string_to_metric_families(text) for s in family.samples}


# --- versions at start-up -------------------------------------------------------------------------

def test_startup_with_a_corrupt_newest_version_serves_the_previous_one(server):
  port, _, log_path, _ = server
  status, _, out = call(port, "GET", f"/v1/models/{MODEL}")
  states = {s["version"]: s for s in out["model_version_status"]}
  assert states["1"]["state"] == "AVAILABLE"
  assert states["2"]["state"] == "END" and states["2"]["status"]["error_code"] == "UNKNOWN"
  assert states["2"]["status"]["error_message"]
  status, version, _ = predict(port, ONE)
  assert (status, version) == (200, "1")
  log = open(log_path, encoding="utf-8").read()
  assert re.search(r"version 2 \(.*\) failed to load", log), log[-3000:]
  assert "Traceback" not in log


# --- limits ---------------------------------------------------------------------------------------

def test_body_over_the_limit_is_refused_before_it_is_read(server):
  port, pid, _, _ = server
  # A Content-Length over the limit: 413 as soon as the headers are in, the body never sent.
  with connect(port) as sock:
    sock.sendall(b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    status, _, out = read_answer(sock)
    assert status == 413 and f"max_body_bytes={MAX_BODY}" in out["error"], out
    assert closed_within(sock, 5)

  # A chunked body of 128 MB: cut off with 413 once past the limit, never held whole.
  before = rss_bytes(pid)
  chunk = b"[" * (1 << 20)
  sent = 0
  with connect(port) as sock:
    sock.sendall(b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
      while sent < 128 * len(chunk) and not select.select([sock], [], [], 0)[0]:
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    except OSError:  # The server closed its side: the answer is waiting.
      pass
    status, _, out = read_answer(sock)
  assert status == 413 and f"max_body_bytes={MAX_BODY}" in out["error"], out
  assert sent < 64 * len(chunk), f"the server read {sent} bytes of a body over {MAX_BODY}"
  assert rss_bytes(pid) - before < 32 << 20, (before, rss_bytes(pid))

  # Under the limit, a chunked body is served.
  body = json.dumps(ONE).encode()
  status, headers, out = send_raw(port, b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n"
                                  % (len(body), body))
  assert status == 200 and len(out["predictions"][0]["item_ids"]) == 5


def test_slow_and_silent_clients_are_dropped_while_others_are_served(server):
  port, _, _, _ = server
  slow, silent = connect(port), connect(port)
  try:
    slow.sendall(b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nContent-")  # Half the headers.
    start = time.time()
    served = 0
    while time.time() - start < 1.2:  # Others are answered meanwhile.
      status, _, _ = predict(port, ONE)
      assert status == 200
      served += 1
    assert served >= 5
    status, _, out = read_answer(slow)
    assert status == 408 and "read_timeout" in out["error"], out
    assert READ_TIMEOUT - 0.5 < time.time() - start < READ_TIMEOUT + 3
    assert closed_within(slow, 5)
    assert closed_within(silent, IDLE_TIMEOUT + 3)  # Connected, never sent a byte.
  finally:
    slow.close()
    silent.close()


def test_headers_over_the_limit_are_refused(server):
  port, _, _, _ = server
  status, _, out = send_raw(port, request_bytes(json.dumps(ONE).encode(),
                                                headers=b"X-Big: " + b"a" * 10_000 + b"\r\n"))
  assert status == 431 and f"max_header_bytes={MAX_HEADER}" in out["error"], out
  # A header that never ends, sent piecewise: refused once past the limit, not buffered on.
  with connect(port) as sock:
    sock.sendall(b"GET /v1/models/uma2 HTTP/1.1\r\nX-Endless: ")
    try:
      for _ in range(40):
        sock.sendall(b"b" * 1000)
        time.sleep(0.01)
    except OSError:
      pass
    status, _, out = read_answer(sock)
  assert status == 431, out
  status, _, out = send_raw(port, request_bytes(b"{}", path=b"/v1/models/" + b"m" * 10_000))
  assert status == 414, out


def test_connections_over_the_limit_get_503(server):
  port, _, _, _ = server
  held = [connect(port) for _ in range(MAX_CONNECTIONS)]
  try:
    time.sleep(0.3)
    status, headers, out = send_raw(port, request_bytes(json.dumps(ONE).encode()))
    assert status == 503 and "max_connections" in out["error"] and headers["retry-after"] == "1"
  finally:
    for sock in held:
      sock.close()
  deadline = time.time() + 10
  while predict(port, ONE)[0] != 200:
    assert time.time() < deadline
    time.sleep(0.2)


# --- malformed input ------------------------------------------------------------------------------

HOSTILE = [
    ("surrogate key", request_bytes(rb'{"\ud800": 1}'), 400, r"\ud800"),
    ("surrogate input name", request_bytes(rb'{"instances": [{"user_id": 1, "\udfff": 2}]}'), 400,
     "unknown input"),
    ("control characters in a key", request_bytes(b'{"\\u001b[31m\\n\\u0000": 1}'), 400,
     "unknown field"),
    ("invalid UTF-8", request_bytes(b'{"instances": [{"user_id": 1}], "k": "\xc3\x28"}'), 400,
     "not valid JSON"),
    ("100k open brackets", request_bytes(b"[" * 100_000), 400, "not valid JSON"),
    ("instances 900 deep", request_bytes(b'{"instances": ' + b"[" * 900 + b"]" * 900 + b"}"), 400,
     "instances[0]"),
    ("5000-digit integer", request_bytes(b'{"instances": [{"user_id": ' + b"9" * 5000 + b"}]}"),
     400, "not valid JSON"),
    ("empty body", request_bytes(b""), 400, "not valid JSON"),
    ("NaN k", request_bytes(b'{"instances": [{"user_id": 1}], "k": NaN}'), 400, "k:"),
    ("10k unknown fields", request_bytes(json.dumps({f"f{i}": 1 for i in range(10_000)}).encode()),
     400, "more characters"),
    ("100k arrays as history ids",
     request_bytes(b'{"instances": [{"user_id": 1, "history": [' + b"[1]," * 100_000 + b"[1]]}]}"),
     400, "history[0]"),
    ("a TLS handshake", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64, 400,
     "invalid HTTP request"),
    ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "invalid HTTP request"),
    ("bytes that are no method", b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", 400, "invalid HTTP request"),
    ("a non-ASCII path", b"GET /v1/models/\xff HTTP/1.1\r\nHost: t\r\n\r\n", 400,
     "invalid HTTP request"),
    ("Content-Length and chunked", b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 2"
     b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "invalid HTTP request"),
    ("a bad chunk size", b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
     b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "invalid HTTP request"),
    ("a NUL in a header", request_bytes(b"{}", headers=b"X-A: a\x00b\r\n"), 400,
     "invalid HTTP request"),
    ("DELETE", b"DELETE " + PREDICT + b" HTTP/1.1\r\nHost: t\r\n\r\n", 405, "Method Not Allowed"),
]


def test_hostile_requests_get_a_json_4xx_never_a_500(server):
  wrong = []
  for name, request_data, status, message in HOSTILE:
    try:
      answered, _, out = send_raw(server[0], request_data)
    except (AssertionError, OSError, ValueError, http.client.HTTPException) as e:  # Not JSON.
      wrong.append((name, repr(e)[:300]))
      continue
    # Long messages (10k field names) are cut.
    if answered != status or message not in out["error"] or len(out["error"]) > 2200:
      wrong.append((name, answered, out["error"][:300]))
  assert not wrong, wrong


def test_logs_hold_no_raw_client_text_and_a_disconnect_is_one_line(server):
  port, _, log_path, _ = server
  # After the hostile requests above: a path of control characters (uvicorn's access log, on in
  # this server, writes paths) and a client that leaves in the middle of its body.
  status, _, _ = send_raw(port, b"GET /v1/models/%1b%5b31m%0aFAKE-LINE%00x HTTP/1.1\r\nHost: t"
                          b"\r\n\r\n")
  assert status == 404
  with connect(port) as sock:
    sock.sendall(b"POST " + PREDICT + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"in")
    time.sleep(0.2)
  log = wait_for_log(log_path, "went away before sending all of POST /v1/models/uma2:predict")
  assert len(re.findall("went away before sending all of", log)) == 1
  assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", log), "a raw control character in the log"
  assert not re.search("^FAKE-LINE", log, re.M)
  assert "Traceback" not in log and "Exception in ASGI application" not in log


def test_log_lines_escape_what_any_logger_writes():
  import io
  import logging

  from uma2_tf.serving import monitoring

  stream = io.StringIO()
  logger = logging.getLogger("uma2-test-escaping")
  logger.addHandler(logging.StreamHandler(stream))
  logger.propagate = False
  monitoring.escape_logs(["uma2-test-escaping"])
  logger.warning("path %s", "/a\x1b[31m\nFAKE\ud800\u202e")
  try:
    raise ValueError("bad \x1b\nkey \ud800")
  except ValueError:
    logger.exception("failed")
  lines = stream.getvalue().splitlines()
  assert lines[0] == r"path /a\x1b[31m\nFAKE\ud800\u202e"
  assert lines[1] == "failed" and lines[2] == "Traceback (most recent call last):"
  assert lines[-1] == r"ValueError: bad \x1b\nkey \ud800"
  assert not re.search("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]", stream.getvalue())
  # `escape` (for client text put into a line) also escapes backslashes, and cuts.
  assert monitoring.escape("a\\n\n" + "x" * 400, limit=10) == r"a\\n\nxxxxxx...(394 more)"


# --- metrics --------------------------------------------------------------------------------------

def test_metrics_parse_and_move_with_requests(server):
  port = server[0]
  ok = ("uma2_serving_requests_total", (("endpoint", "predict"), ("status", "200")))
  bad = ("uma2_serving_requests_total", (("endpoint", "predict"), ("status", "400")))
  errors = ("uma2_serving_errors_total", (("status", "400"),))
  latency = ("uma2_serving_request_latency_seconds_count", (("endpoint", "predict"),))
  batch_count = ("uma2_serving_batch_size_count", ())
  batch_sum = ("uma2_serving_batch_size_sum", ())
  before = metric_values(port)
  for users in (1, 2, 3):
    assert predict(port, {"instances": [{"user_id": u + 1} for u in range(users)]})[0] == 200
  assert predict(port, {"k": 5})[0] == 400
  after = metric_values(port)
  assert after[ok] - before.get(ok, 0) == 3
  assert after[bad] - before.get(bad, 0) == 1
  assert after[errors] - before.get(errors, 0) == 1
  assert after[latency] - before.get(latency, 0) == 4
  assert after[batch_count] - before[batch_count] == 3
  assert after[batch_sum] - before[batch_sum] == 6
  assert ("uma2_serving_oov_ids_total", ()) in after
  _, version, _ = predict(port, ONE)
  assert after[("uma2_serving_model_version", (("model_name", MODEL),))] == int(version)


# --- versions while serving -----------------------------------------------------------------------

def test_a_fixed_version_is_retried_and_a_slowly_copied_one_served_once_complete(server,
                                                                                 export_dir):
  port, _, log_path, served = server
  seen, failures, stop = [], [], threading.Event()

  def client():
    while not stop.is_set():
      try:
        status, version, out = predict(port, ONE)
        if status == 200 and len(out["predictions"][0]["item_ids"]) == 5:
          seen.append(int(version))
        else:
          failures.append((status, out))
      except (OSError, http.client.HTTPException, ValueError) as e:
        failures.append(repr(e))
      time.sleep(0.02)

  def wait_for_version(version: int, seconds: float) -> None:
    deadline = time.time() + seconds
    while (not seen or seen[-1] != version) and not failures:
      assert time.time() < deadline, (version, seen[-5:], [
          line for line in open(log_path) if "version" in line][-10:])
      time.sleep(0.1)

  thread = threading.Thread(target=client)
  thread.start()
  try:
    # The corrupt version 2 is repaired: its files changed, so it is tried again.
    shutil.copy(os.path.join(export_dir, "brute_force_model", "saved_model.pb"),
                os.path.join(served, "2", "brute_force_model", "saved_model.pb"))
    wait_for_version(2, 30)

    # Version 3 appears as an empty dir and its files come in one by one over ~5 s, the variables
    # last and in two halves, as a slow copy (not the exporter's atomic rename) would. The copy
    # stalls before the variables: the server tries what is there, fails, and tries again later.
    target = os.path.join(served, "3")
    os.makedirs(target)
    files = sorted((os.path.relpath(os.path.join(root, name), export_dir)
                    for root, _, names in os.walk(export_dir) for name in names),
                   key=lambda p: (p != "metadata.json", "variables" in p, p))
    stall_before = next(p for p in files if "variables" in p)
    for path in files:
      if path == stall_before:
        time.sleep(1.5)
      os.makedirs(os.path.dirname(os.path.join(target, path)), exist_ok=True)
      with open(os.path.join(export_dir, path), "rb") as f:
        data = f.read()
      with open(os.path.join(target, path), "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        if "variables" in path:
          time.sleep(0.4)
        f.write(data[len(data) // 2:])
      time.sleep(0.3)
    wait_for_version(3, 60)
    time.sleep(0.3)
  finally:
    stop.set()
    thread.join(timeout=60)
  assert not failures, failures[:3]
  assert seen == sorted(seen) and seen[0] == 1 and seen[-1] == 3, seen[-5:]
  status, version, out = predict(port, {"instances": [{"user_id": 4, "age": 1, "history": [8]}],
                                        "k": 20})
  ids, _ = expected_top_k(random_tables(1), [4], [1], [[8]], k=20)
  assert (status, version) == (200, "3") and out["predictions"][0]["item_ids"] == ids[0].tolist()
  log = open(log_path, encoding="utf-8").read()
  assert "swapped version 1 -> 2" in log and "swapped version 2 -> 3" in log
  assert re.search(r"version 3 \(.*\) failed to load \(attempt 1;", log), log[-3000:]
