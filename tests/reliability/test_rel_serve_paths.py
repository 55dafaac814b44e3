"""Promise 4: paths stay inside their root.

The rule tested here: **the server resolves adapter names inside its adapters root only.** A name is one
path component of ``[A-Za-z0-9._-]`` (not ``.``/``..``); after following symlinks the folder must still be
inside the root. ``..``, absolute paths, URL-encoded separators and dots (``%2e%2e``, ``%2f``, double
encoding), NUL bytes, backslashes, look-alike Unicode and symlinks pointing out are refused on every
route that takes a name (``POST /v1/adapters``, ``model`` of the completion/chat routes,
``DELETE /v1/adapters/{name}``), sent through the ASGI app with the exact raw path and through a real
uvicorn socket on 127.0.0.1. A real folder inside the root whose config or weights file is a symlink out is refused as well. A Python
audit hook proves that no file outside the root is even opened.

The CLI is different on purpose: ``lorakit inspect MODEL --adapter PATH`` takes a path the user typed, so
a symlink is followed (the last test documents it).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.reliability.servekit import asgi_call, char_tokenizer, make_adapter
from lorakit.serve import LoraServer
from lorakit.serve.http import BackgroundServer, HttpSettings, create_app
from tests.conftest import save_tiny_folder, tiny_llama

KEY = "paths-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


class OpenedFiles:
    """Records every path Python opens or lists while ``on`` (a ``sys.addaudithook`` hook; hooks stay)."""

    def __init__(self) -> None:
        self.on = False
        self.paths: list[str] = []
        self.lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.on and event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], str | bytes):
            with self.lock:
                self.paths.append(os.fsdecode(args[0]))


AUDIT = OpenedFiles()


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    """adapters/ (the root) with a good adapter, an inside link, and traps; outside/ with a valid adapter."""
    top = tmp_path_factory.mktemp("paths")
    root, outside = top / "adapters", top / "outside"
    root.mkdir()
    make_adapter(tiny_llama, root / "good", seed=1, r=2, targets=("qv",))
    make_adapter(tiny_llama, outside / "secret", seed=2, r=2, targets=("qv",))
    os.symlink(root / "good", root / "inside_link")  # stays inside: allowed
    os.symlink(outside / "secret", root / "escape")  # points out: refused
    os.symlink(root / "escape", root / "chain")  # inside link to a link that points out: refused
    os.symlink(root / "loop", root / "loop")  # a loop: refused
    os.symlink(outside, root / "outside_dir")
    for name, linked in (("file_link", "adapter_model.safetensors"), ("config_link", "adapter_config.json")):
        (root / name).mkdir()  # a real folder inside, one of whose files points out
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            if file == linked:
                os.symlink(outside / "secret" / file, root / name / file)
            else:
                shutil.copy(outside / "secret" / file, root / name / file)
    return {"top": top, "root": root, "outside": outside}


@pytest.fixture(scope="module")
def server(layout) -> Iterator[LoraServer]:
    srv = LoraServer(tiny_llama(), char_tokenizer(), name="base", adapters_dir=layout["root"], max_loaded=4)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def app(server):
    return create_app(server, HttpSettings(api_key=KEY))


def bad_names(layout: dict[str, Path]) -> list[str]:
    outside, root = layout["outside"], layout["root"]
    return [
        "..", ".", "../outside/secret", "../../etc/passwd", str(outside / "secret"), str(root / "good"), "/etc",
        "good/../good", "./good", "good/", "outside_dir/secret", "%2e%2e", "%2e%2e%2foutside%2fsecret",
        "..%2foutside%2fsecret", "%252e%252e%252f", "..\\outside\\secret", "good\\..\\..", "good\x00",
        "good%00", "\uff47ood", "good\n", " good", "~", "~/secret", "file:///etc/passwd", "$HOME", "",
        "a" * 129, "escape", "chain", "loop", "outside_dir", "secret", "file_link", "config_link",
    ]


def _post(app, path: str, body: dict) -> tuple[int, dict]:
    status, raw = asgi_call(app, "POST", path.encode(), AUTH, json.dumps(body).encode())
    return status, json.loads(raw)


def test_names_outside_the_root_are_refused_on_every_route(app, server, layout) -> None:
    AUDIT.paths.clear()
    AUDIT.on = True
    try:
        for name in bad_names(layout):
            for path, body in (("/v1/adapters", {"name": name}),
                               ("/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 1}),
                               ("/v1/chat/completions", {"model": name, "max_tokens": 1,
                                                         "messages": [{"role": "user", "content": "hi"}]})):
                status, body_out = _post(app, path, body)
                assert status in (400, 404, 422), (name, path, status, body_out)
                assert set(body_out["error"]) == {"message", "type", "param", "code"}
                if str(layout["outside"]) not in name:  # echoing the client's own input is no leak
                    assert str(layout["outside"]) not in body_out["error"]["message"], "the answer leaks a path"
        status, _ = _post(app, "/v1/adapters", {"name": "good"})  # the hook does see a legitimate load
        assert status == 200
    finally:
        AUDIT.on = False
    assert any(p.endswith("good/adapter_config.json") for p in AUDIT.paths), AUDIT.paths[:5]
    assert set(server.bank.names()) <= {"good", "inside_link"}
    outside = str(layout["outside"])
    assert not [p for p in AUDIT.paths if p.startswith(outside)], "a file outside the root was opened"
    assert not [p for p in AUDIT.paths if os.path.realpath(p).startswith(outside)]


@pytest.mark.parametrize("raw", [
    "/v1/adapters/..", "/v1/adapters/.", "/v1/adapters/../outside/secret", "/v1/adapters/..%2Foutside%2Fsecret",
    "/v1/adapters/%2e%2e", "/v1/adapters/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/v1/adapters/%252e%252e",
    "/v1/adapters/escape", "/v1/adapters/chain", "/v1/adapters/good%00", "/v1/adapters/good%2F..%2F..",
    "/v1/adapters/..%5C..%5Cetc", "/v1/adapters//etc/passwd", "/v1/adapters/%2Fetc%2Fpasswd",
])
def test_delete_with_raw_and_encoded_paths_never_touches_anything(app, server, raw: str) -> None:
    loaded = set(server.bank.names())
    status, body = asgi_call(app, "DELETE", raw.encode(), AUTH)
    assert status in (400, 404, 405), (raw, status, body)
    assert set(server.bank.names()) == loaded


def test_symlinks_inside_the_root_are_followed_and_out_are_not(app, server) -> None:
    status, body = _post(app, "/v1/adapters", {"name": "inside_link"})
    assert status == 200, body
    assert set(server.available()) == {"good", "inside_link"}  # no trap is listed
    status, body = asgi_call(app, "GET", b"/v1/models", AUTH)
    ids = {m["id"] for m in json.loads(body)["data"]}
    assert {"escape", "chain", "loop", "outside_dir", "file_link", "config_link"}.isdisjoint(ids)


def test_the_same_over_a_real_socket(app, server, layout) -> None:
    """uvicorn decodes the raw request line itself: send unnormalised paths with http.client."""
    with BackgroundServer(app, host="127.0.0.1") as bg:
        conn = http.client.HTTPConnection(bg.host, bg.port, timeout=30)
        try:
            for raw in ("/v1/adapters/../outside/secret", "/v1/adapters/..%2Foutside%2Fsecret",
                        "/v1/adapters/%2e%2e", "/v1/adapters/escape"):
                conn.request("DELETE", raw, headers=AUTH)
                response = conn.getresponse()
                response.read()
                assert response.status in (400, 404, 405), (raw, response.status)
            for name in ("../outside/secret", str(layout["outside"] / "secret"), "%2e%2e", "escape"):
                conn.request("POST", "/v1/adapters", body=json.dumps({"name": name}), headers=AUTH)
                response = conn.getresponse()
                payload = json.loads(response.read())
                assert response.status in (400, 404), (name, response.status, payload)
        finally:
            conn.close()
    assert "secret" not in server.bank.names()


def test_cli_follows_a_symlink_the_user_gives(layout, tmp_path, capsys) -> None:
    """The CLI rule: a path on the command line is the user's own choice, symlinks included."""
    from lorakit.cli.main import main

    model_dir = save_tiny_folder(tiny_llama(), tmp_path / "model")
    link = tmp_path / "my_adapter"
    os.symlink(layout["outside"] / "secret", link)
    capsys.readouterr()
    assert main(["inspect", str(model_dir), "--adapter", str(link), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modules"] == 4


def test_the_root_itself_and_files_are_not_adapters(layout, tmp_path) -> None:
    from lorakit.serve.folder import AdapterFolder, AdapterNotFound

    folder = AdapterFolder(layout["root"])
    (layout["root"] / "a_file").write_text("x")
    for name in ("a_file", "missing"):
        with pytest.raises(AdapterNotFound):
            folder.resolve(name)
    copy = tmp_path / "root_copy"
    shutil.copytree(layout["root"] / "good", copy / "good")
    os.symlink(copy, copy / "self")  # a link to the root itself is not an adapter
    with pytest.raises(AdapterNotFound):
        AdapterFolder(copy).resolve("self")
