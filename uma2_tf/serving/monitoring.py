"""The REST server's Prometheus metrics, and log lines that client text cannot forge or break.

    from uma2_tf.serving import monitoring
    monitoring.count_request("predict", 200, seconds)  # one answered request (and its latency)
    monitoring.observe_batch(users)        # users in one predict request
    monitoring.count_oov(n)                # ids of a request that the served vocabularies lack
    monitoring.exposition()                # (body, content type) for GET PROMETHEUS_PATH
    logging.warning("bad path %s", monitoring.escape(path))   # client text, one printable line
    monitoring.escape_logs()               # every log handler escapes what it writes

The metrics live in prometheus_client's default registry, next to its process_* metrics (RSS, CPU,
open fds), and are scraped at TF Serving's path, /monitoring/prometheus/metrics:

  uma2_serving_requests_total{endpoint,status}   every answer, refusals of the HTTP layer included
  uma2_serving_errors_total{status}              the answers >= 400
  uma2_serving_request_latency_seconds{endpoint} from the handler's start to its answer
  uma2_serving_batch_size                        users per predict request
  uma2_serving_oov_ids_total                     ids outside the served version's vocabularies
  uma2_serving_model_version{model_name}         the version being served
  uma2_serving_version_loads_total{result}       version loads, "ok" or "error"

Counting is on every request's path, so it stays a dict look-up and a few locked additions.
"""
from __future__ import annotations

import logging
import re
import traceback

import prometheus_client as prom

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

REQUESTS = prom.Counter("uma2_serving_requests", "Requests answered, by endpoint and HTTP status.",
                        ["endpoint", "status"])
ERRORS = prom.Counter("uma2_serving_errors", "Requests answered with an HTTP status >= 400.",
                      ["status"])
LATENCY = prom.Histogram("uma2_serving_request_latency_seconds",
                         "Time from a request's handler starting to its answer, by endpoint.",
                         ["endpoint"], buckets=(.001, .0025, .005, .0075, .01, .015, .02, .03, .05,
                                                .075, .1, .25, .5, 1, 2.5, 5, 10))
BATCH_SIZE = prom.Histogram("uma2_serving_batch_size", "Users per predict request.",
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
OOV_IDS = prom.Counter("uma2_serving_oov_ids",
                       "Ids in requests that the served version's vocabularies do not hold.")
MODEL_VERSION = prom.Gauge("uma2_serving_model_version", "The version being served.",
                           ["model_name"])
VERSION_LOADS = prom.Counter("uma2_serving_version_loads", "Attempts to load a version, by result.",
                             ["result"])

# Labelled children, made once: `labels()` takes a lock and builds a key on every call.
_requests: dict[tuple[str, int], prom.Counter] = {}
_errors: dict[int, prom.Counter] = {}
_latency: dict[str, prom.Histogram] = {}


def count_request(endpoint: str, status: int, seconds: float | None = None) -> None:
  """Counts one answer of `endpoint` (a route name, never client text: labels are a fixed set)."""
  child = _requests.get((endpoint, status))
  if child is None:
    child = _requests[(endpoint, status)] = REQUESTS.labels(endpoint, str(status))
  child.inc()
  if status >= 400:
    error = _errors.get(status)
    if error is None:
      error = _errors[status] = ERRORS.labels(str(status))
    error.inc()
  if seconds is not None:
    latency = _latency.get(endpoint)
    if latency is None:
      latency = _latency[endpoint] = LATENCY.labels(endpoint)
    latency.observe(seconds)


def observe_batch(users: int) -> None:
  BATCH_SIZE.observe(users)


def count_oov(count: int) -> None:
  """Counts ids a request carried that the served vocabularies lack (the request path calls it)."""
  if count:
    OOV_IDS.inc(count)


def track_version(model_name: str, current_version) -> None:
  """Reports `current_version()` (read at every scrape) as the served version of `model_name`."""
  MODEL_VERSION.labels(model_name).set_function(current_version)


def endpoint_of(path: str | None) -> str:
  """The route a path asks for, as a label: requests refused before routing are counted too."""
  if path is None:
    return "unknown"
  if path.startswith("/v1/models/"):
    if path.endswith(":predict"):
      return "predict"
    return "metadata" if path.endswith("/metadata") else "status"
  return "metrics" if path == PROMETHEUS_PATH else "other"


def exposition() -> tuple[bytes, str]:
  return prom.generate_latest(), prom.CONTENT_TYPE_LATEST


# --- logs ---------------------------------------------------------------------------------------

# C0 and C1 controls (newlines too: a message is one line), lone surrogates, the Unicode line
# separators and the bidi overrides that can make a line read differently than it is written.
_OTHERS = r"\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(rf"[\x00-\x1f{_OTHERS}]")
_UNSAFE_BUT_NEWLINE = re.compile(rf"[\x00-\x09\x0b-\x1f{_OTHERS}]")
# `escape` also escapes backslashes (a client's "\\n" must not read as an escaped newline); the log
# filter does not, so text that `escape` made safe passes the filter unchanged.
_UNSAFE_OR_BACKSLASH = re.compile(rf"[\\\x00-\x1f{_OTHERS}]")


def _escape_char(match: re.Match) -> str:
  char = match.group()
  if char == "\\":
    return "\\\\"
  code = ord(char)
  return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
      f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape(text, limit: int = 300) -> str:
  """`text` as one printable line: control characters, lone surrogates and backslashes escaped as
  in a Python literal, cut to `limit` characters. For client text put into a log line."""
  text = text if isinstance(text, str) else str(text)
  if len(text) > limit:
    text = f"{text[:limit]}...({len(text) - limit} more)"
  return _UNSAFE_OR_BACKSLASH.sub(_escape_char, text)


class _EscapingFilter(logging.Filter):
  """Rewrites a record's message (and traceback) escaped, whoever logged it: uvicorn's access log
  writes a client's percent-decoded path, for one."""

  def filter(self, record: logging.LogRecord) -> bool:
    if getattr(record, "_uma2_escaped", False):  # Already seen by another handler's filter.
      return True
    record._uma2_escaped = True
    message = record.getMessage()
    if _UNSAFE.search(message):
      record.msg, record.args = _UNSAFE.sub(_escape_char, message), None
      record.__dict__.pop("color_message", None)  # uvicorn's coloured copy of the raw message.
    if record.exc_info and not record.exc_text:
      record.exc_text = _traceback_text(record.exc_info)
    return True


def _traceback_text(exc_info) -> str:
  """A traceback as `logging` writes it, but every exception message in it escaped to one line (a
  message can hold client text); the frames keep their lines."""
  error = traceback.TracebackException(*exc_info)
  node, seen = error, set()
  while node is not None and id(node) not in seen:
    seen.add(id(node))
    if isinstance(getattr(node, "_str", None), str):  # The message format() writes.
      node._str = escape(node._str, limit=2000)
    node = node.__cause__ or node.__context__
  return _UNSAFE_BUT_NEWLINE.sub(_escape_char, "".join(error.format()).rstrip("\n"))


_FILTER = _EscapingFilter()


def escape_logs(logger_names=None) -> None:
  """Adds the escaping filter to the handlers of `logger_names` (by default the root logger's,
  where absl writes, and uvicorn's). Call it after uvicorn configured its loggers
  (`uvicorn.Config(...)` does), so that their handlers exist."""
  if logger_names is None:
    logger_names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
  for name in logger_names:
    for handler in logging.getLogger(name or None).handlers:
      if _FILTER not in handler.filters:
        handler.addFilter(_FILTER)
