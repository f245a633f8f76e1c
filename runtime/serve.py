"""``taskfold serve DIR``: a folder (an exported package, the demo page) over HTTP on 127.0.0.1, for browsers.

The JavaScript runtime (``js/``) opens a package by URL; onnxruntime-web runs WebAssembly with threads
only in a cross-origin isolated page, so every response carries ``Cross-Origin-Opener-Policy:
same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp`` (and ``Cross-Origin-Resource-Policy:
same-origin``). The server listens on 127.0.0.1 only, serves regular files only (no listings), and
refuses — 404, without opening it — any path that leaves its folder: ``..`` components, and symbolic
links whose real path is outside. ``/js/`` serves the repository's JavaScript runtime (``js/``: its
``src`` and the ``node_modules`` it imports) when it is there, so a page under DIR can import it.

Standard library only (``http.server``); no taskfold import beyond the errors.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from taskfold.errors import ConfigError

HOST = "127.0.0.1"
HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
           "Cross-Origin-Resource-Policy": "same-origin", "X-Content-Type-Options": "nosniff",
           "Cache-Control": "no-cache"}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
         ".json": "application/json", ".wasm": "application/wasm", ".png": "image/png", ".css": "text/css",
         ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
#: the repository's JavaScript runtime, mounted at /js/ when present
JS_DIR = Path(__file__).resolve().parents[1] / "js"
_CHUNK = 1 << 20


def resolve(roots: dict[str, Path], url_path: str) -> Path | None:
    """The regular file a URL path names inside one of ``roots`` (URL prefix -> real folder), or None.

    ``..`` components are refused before anything is looked at; the file's real path (symlinks followed)
    must lie inside its folder.
    """
    path = urllib.parse.unquote(url_path.split("?", 1)[0].split("#", 1)[0])
    if "\0" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    for prefix in sorted(roots, key=len, reverse=True):
        pre = [p for p in prefix.split("/") if p]
        if parts[:len(pre)] == pre:
            root = roots[prefix]
            rel = parts[len(pre):] or ["index.html"]
            real = Path(os.path.realpath(root.joinpath(*rel)))
            if real != root and root not in real.parents:
                return None
            return real if real.is_file() else None
    return None


class _Handler(BaseHTTPRequestHandler):
    roots: dict[str, Path] = {}
    quiet = False

    def _send(self, head_only: bool) -> None:
        file = resolve(self.roots, self.path)
        if file is None:
            self.send_response(HTTPStatus.NOT_FOUND)
            for k, v in HEADERS.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = file.stat().st_size
        self.send_response(HTTPStatus.OK)
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", TYPES.get(file.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if head_only:
            return
        with open(file, "rb") as f:
            while block := f.read(_CHUNK):
                self.wfile.write(block)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._send(False)

    def do_HEAD(self):  # noqa: N802
        self._send(True)

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def make_server(folder: str | os.PathLike, port: int = 8000, js: str | os.PathLike | None | bool = True,
                quiet: bool = False) -> ThreadingHTTPServer:
    """An HTTP server for ``folder`` on 127.0.0.1:``port`` (0: any free port), not yet serving.

    ``js``: the JavaScript runtime's folder to mount at ``/js/`` (True: the repository's ``js/`` if it is
    there; False/None: none).
    """
    root = Path(os.path.realpath(folder))
    if not root.is_dir():
        raise ConfigError(f"{str(folder)!r} is not a folder", hint="give the folder to serve (a package, the demo's --out)")
    roots = {"/": root}
    if js is True:
        js = JS_DIR if (JS_DIR / "src" / "index.js").is_file() else None
    if js:
        roots["/js/"] = Path(os.path.realpath(js))
    handler = type("Handler", (_Handler,), {"roots": roots, "quiet": quiet})
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        raise ConfigError(f"cannot listen on {HOST}:{port}: {e.strerror}", hint="choose another --port") from None


def serve_in_thread(folder, port: int = 0, **kw) -> tuple[ThreadingHTTPServer, str]:
    """``make_server`` serving in a daemon thread; ``(server, base URL)``. Stop it with ``server.shutdown()``."""
    server = make_server(folder, port, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{HOST}:{server.server_address[1]}/"


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="serve a folder (a package, the demo page) on 127.0.0.1 for browsers",
                              description="Serve DIR over HTTP on 127.0.0.1 with the cross-origin isolation "
                                          "headers WebAssembly threads need (COOP/COEP); paths outside DIR are "
                                          "refused. /js/ serves the repository's JavaScript runtime.")
    p.add_argument("folder", help="folder to serve (e.g. a package from `taskfold export`, or demo-out)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--no-js", action="store_true", help="do not mount the JavaScript runtime at /js/")
    p.set_defaults(func=_cmd_serve)
    return p


def _cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0 to 65535)")
    server = make_server(args.folder, args.port, js=not args.no_js)
    print(f"serving {os.path.realpath(args.folder)} at http://{HOST}:{server.server_address[1]}/ "
          "(cross-origin isolated; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
