"""Serving the exports of `uma2_tf.export` (`make serve`).

    from uma2_tf.serving import loader, server
    signature, metadata = loader.load_model(loader.latest_version("exports/uma2_default"))
    app = server.create_app("exports/uma2_default", "uma2")   # FastAPI, TF Serving's REST API

  - `loader`: loads one version (importing scann first for the ScaNN variant).
  - `servable`: a loaded, warmed-up version (`Servable`) and the micro-batcher that merges calls.
  - `parsing`: checks a predict body and turns it into input arrays and k (`parse_request`).
  - `versions`: `ModelManager`, the served version and the poller that swaps in newer ones.
  - `server`: the app: `POST /v1/models/<name>:predict`, version status, metadata, metrics.
  - `transport`: the uvicorn protocol: each answer in one write, and the HTTP limits (body and
    header size, read and idle timeouts, connections).
  - `monitoring`: the Prometheus metrics and the escaping of client text in log lines.
"""
