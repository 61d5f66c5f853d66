"""A Hugging Face hub on 127.0.0.1: serves model folders through the endpoints huggingface_hub calls.

`GET /api/models/{repo}/revision/{rev}` lists a repo's files (model_info), `HEAD /{repo}/resolve/{rev}/{file}`
gives the headers `hf_hub_download` checks (X-Repo-Commit, ETag, Content-Length), and `GET` of the same path sends
the bytes. Unknown repos answer 404 with `X-Error-Code: RepoNotFound`, as the hub does. A file named in
`break_after` sends only that many bytes and drops the connection, every time (a network that breaks mid-file).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.break_after: dict[str, int] = {}
        self.gated: set[str] = set()  # repos that answer 403 GatedRepo, as to a user not granted access
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request served
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def file_gets(self) -> list[str]:
        """Paths of the file downloads (GET .../resolve/...) served so far."""
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                path = unquote(self.path.split("?")[0])
                if path.startswith("/api/models/"):
                    return self._model_info(path[len("/api/models/") :])
                if "/resolve/" in path:
                    repo, _, rest = path.lstrip("/").partition("/resolve/")
                    _revision, _, filename = rest.partition("/")
                    return self._file(repo, filename, body)
                self._not_found(None)

            def _not_found(self, code: str | None) -> None:
                self.send_response(404)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _model_info(self, rest: str) -> None:
                repo, _, _revision = rest.partition("/revision/")
                folder = hub.repos.get(repo)
                if repo in hub.gated:
                    self.send_response(403)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if folder is None:
                    return self._not_found("RepoNotFound")
                files = sorted(p.name for p in folder.iterdir() if p.is_file())
                data = json.dumps({"id": repo, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]})
                self._send(200, data.encode(), {"Content-Type": "application/json"}, body=True)

            def _file(self, repo: str, filename: str, body: bool) -> None:
                folder = hub.repos.get(repo)
                if folder is None:
                    return self._not_found("RepoNotFound")
                path = folder / filename
                if not path.is_file():
                    return self._not_found("EntryNotFound")
                content = path.read_bytes()
                headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}
                cut = hub.break_after.get(filename)
                if body and cut is not None:
                    self.send_response(200)
                    for key, value in {**headers, "Content-Length": str(len(content))}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(content[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send(200, content, headers, body)

            def _send(self, status: int, content: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(content))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(content)

        return Handler
