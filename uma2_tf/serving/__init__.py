"""Serving the exports of `uma2_tf.export` (`make serve`).

    from uma2_tf.serving import loader, server
    signature, metadata = loader.load_model(loader.latest_version("exports/uma2_default"))
    app = server.create_app("exports/uma2_default", "uma2")   # FastAPI, TF Serving's REST API

`loader` loads one version (importing scann first for the ScaNN variant); `server` answers
`POST /v1/models/<name>:predict` and picks up newer versions while it runs.
"""
