"""A local stand-in for the Hugging Face hub: serves files at ``/<repo>/resolve/<revision>/<path>``
with the headers ``huggingface_hub.hf_hub_download`` reads (``X-Repo-Commit``, the quoted SHA-256
as ``ETag`` / ``X-Linked-Etag``, ``Content-Length`` / ``X-Linked-Size``) and ``Range`` requests.

    with HubMirror({"duanzh0/my-model-weights": {"qres17m/qres17m-lmb8.pt": path}}) as hub:
        env["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubMirror:
    """``files``: {repo: {path in the repo: local file}}; ``announce``: {path: SHA-256 to announce
    instead of the file's own} (a mirror serving damaged bytes)."""

    def __init__(self, files: dict, announce: dict | None = None):
        self.files = {repo: {p: Path(f) for p, f in paths.items()} for repo, paths in files.items()}
        self.announce = announce or {}
        self.requests: list[tuple[str, str]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _lookup(self, url_path: str):
        for repo, paths in self.files.items():
            prefix = f"/{repo}/resolve/"
            if url_path.startswith(prefix):
                _, _, path = url_path[len(prefix):].partition("/")
                if path in paths:
                    return path, paths[path]
        return None, None

    def _handler(self):
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _head(self, body: bool):
                mirror.requests.append((self.command, self.path))
                path, f = mirror._lookup(self.path.split("?")[0])
                if f is None:
                    self.send_error(404)
                    return None
                data = f.read_bytes()
                sha = mirror.announce.get(path) or hashlib.sha256(data).hexdigest()
                start, end, status = 0, len(data), 200
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start, end, status = int(a), (int(b) + 1 if b else len(data)), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(end - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                return data[start:end] if body else None

            def do_HEAD(self):
                self._head(body=False)

            def do_GET(self):
                data = self._head(body=True)
                if data is not None:
                    self.wfile.write(data)

        return Handler
