"""``taskfold serve``: 127.0.0.1 only, cross-origin isolation headers on every response, nothing outside the
folder (``..``, encoded ``..``, symlinks out), no listings; the JS runtime mounted at /js/."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from taskfold.errors import ConfigError
from taskfold.runtime.serve import HEADERS, make_server, serve_in_thread


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>hi</p>")
    (root / "sub" / "m.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(root / "index.html", root / "inside.html")
    server, url = serve_in_thread(root, quiet=True)
    yield url
    server.shutdown()
    server.server_close()


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), b""


def test_files_are_served_cross_origin_isolated(served):
    status, headers, body = _get(served)
    assert (status, body) == (200, b"<p>hi</p>") and served.startswith("http://127.0.0.1:")
    for k, v in HEADERS.items():
        assert headers[k] == v
    status, headers, body = _get(served + "sub/m.wasm")
    assert status == 200 and headers["Content-Type"] == "application/wasm" and body == b"\0asm"
    assert _get(served + "inside.html")[0] == 200  # a link that stays inside


@pytest.mark.parametrize("path", ["../secret.txt", "%2e%2e/secret.txt", "sub/%2E%2E/%2e%2e/secret.txt", "link.txt",
                                  "sub/", "sub", "nope.txt", "..%2fsecret.txt", "%00"])
def test_nothing_outside_the_folder_and_no_listings(served, path):
    # urllib would normalise "..": send the raw path
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(served)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/" + path)
    r = conn.getresponse()
    assert r.status == 404 and b"secret" not in r.read()
    assert r.getheader("Cross-Origin-Embedder-Policy") == "require-corp"


def test_the_js_runtime_is_mounted_and_a_missing_folder_is_refused(tmp_path):
    server, url = serve_in_thread(tmp_path, quiet=True)
    try:
        status, headers, body = _get(url + "js/src/index.js")
        assert status == 200 and headers["Content-Type"] == "text/javascript" and b"openPackage" in body
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match="is not a folder"):
        make_server(tmp_path / "missing", 0)
