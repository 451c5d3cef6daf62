"""The HTTP/JSON API beside gRPC on a real server: every RPC with plain JSON (streams as NDJSON),
the same messages and codes as gRPC, the same token, limit and metrics, the multipart upload, the
schema's freshness and the README's curl examples run as written."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from simclr_search.serving.server.app import start_server
from simclr_search.serving.server.settings import ServerOptions
from tests.serving.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]


def _png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Http:
    def __init__(self, port: int, token: str = "") -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def raw(self, path: str, body: bytes | None, content_type: str = "application/json"):
        request = urllib.request.Request(
            self.base + path, data=body, method="POST" if body is not None else "GET"
        )
        request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def call(self, method: str, body: dict) -> tuple[int, dict]:
        status, _, data = self.raw(f"/simclr.v1.ImageSearch/{method}", json.dumps(body).encode())
        return status, json.loads(data)

    def stream(self, method: str, lines: list[dict] | dict) -> tuple[int, list[dict]]:
        if isinstance(lines, list):
            body = "\n".join(json.dumps(line) for line in lines).encode()
            content = "application/x-ndjson"
        else:
            body, content = json.dumps(lines).encode(), "application/json"
        status, _, data = self.raw(f"/simclr.v1.ImageSearch/{method}", body, content)
        return status, [json.loads(line) for line in data.splitlines() if line.strip()]


@pytest.fixture
def http_server(tiny_bundle, tmp_path: Path, loop_thread):
    bundle, _ = tiny_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    yield running, Http(running.http_port)
    loop_thread.run(running.stop())


def test_the_schema_is_fresh() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_openapi.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rpc_over_http(http_server) -> None:
    _, http = http_server
    status, info = http.call("GetInfo", {})
    assert status == 200 and info["embedding_dim"] > 0 and info["default_collection"] == "images"
    images = [_png(i) for i in range(4)]
    status, embedded = http.call("Embed", {"images": [{"data": _b64(d)} for d in images[:2]]})
    assert status == 200 and len(embedded["embeddings"]) == 2
    assert len(embedded["embeddings"][0]["values"]) == info["embedding_dim"]
    status, done = http.call(
        "Upsert",
        {"items": [{"id": "a", "image": {"data": _b64(images[0])}, "metadata_json": '{"x": 1}'}]},
    )
    assert status == 200 and done["ids"] == ["a"]
    status, results = http.stream(
        "IndexImages", [{"id": f"i{n}", "image": {"data": _b64(d)}} for n, d in enumerate(images)]
    )
    # i0 has a's bytes: IndexImages skips a content it holds
    assert (
        status == 200 and [r["status"] for r in results] == ["SKIPPED_DUPLICATE"] + ["INDEXED"] * 3
    )
    status, hits = http.call("Search", {"image": {"data": _b64(images[2])}, "k": 3})
    assert status == 200 and hits["hits"][0]["id"] == "i2", hits
    assert set(hits["hits"][0]) >= {"id", "score", "uri", "metadata_json", "is_copy"}
    status, by_id = http.call("Search", {"id": "a", "k": 2})
    assert status == 200 and all(h["id"] != "a" for h in by_id["hits"])
    vector = embedded["embeddings"][0]["values"]
    status, by_vector = http.call("Search", {"vector": {"values": vector}, "k": 1})
    assert status == 200 and len(by_vector["hits"]) == 1
    status, got = http.call("Get", {"ids": ["a"], "include_embeddings": True})
    assert status == 200 and got["items"][0]["metadata_json"] == '{"x": 1}'
    status, answers = http.stream("EmbedStream", [{"images": [{"data": _b64(d)}]} for d in images])
    assert status == 200 and len(answers) == 4
    http.call("Upsert", {"items": [{"id": "b", "image": {"data": _b64(images[1])}}]})
    status, groups = http.stream("FindDuplicates", {"exact_only": True})
    assert status == 200 and len(groups) == 1  # "b" and "i1" are the same bytes
    assert {groups[0]["keep"]["id"], groups[0]["copies"][0]["id"]} == {"b", "i1"}
    status, deleted = http.call("Delete", {"ids": ["a"]})
    assert status == 200 and deleted["deleted"] == 1
    for method, body in (("Denoise", {"image": {"data": _b64(images[0])}}),
                         ("Reconstruct", {"image": {"data": _b64(images[0])}})):  # fmt: skip
        status, answer = http.call(method, body)
        if status == 200:
            assert base64.b64decode(answer["png"]).startswith(b"\x89PNG")
        else:  # the tiny bundle may lack the model: the gRPC code's mapping says so
            assert status == 400 and answer["code"] == "FAILED_PRECONDITION"


def test_errors_carry_grpcs_code_and_message(http_server) -> None:
    from simclr_search.serving.client import Client

    running, http = http_server
    status, error = http.call("Get", {"ids": ["nope"]})
    assert status == 404 and error["code"] == "NOT_FOUND"
    with Client(f"127.0.0.1:{running.port}") as client, pytest.raises(grpc.RpcError) as rpc:
        client.get(["nope"])
    assert rpc.value.details() == error["message"]
    status, error = http.call("Search", {"image": {"data": _b64(b"not an image")}, "k": 3})
    assert status == 400 and error["code"] == "INVALID_ARGUMENT" and "image" in error["message"]
    status, _, body = http.raw("/simclr.v1.ImageSearch/Search", b"{not json")
    assert status == 400 and "SearchRequest" in json.loads(body)["message"]
    status, error = http.call("Frobnicate", {})
    assert status == 501 and "Search" in error["message"]
    status, groups = http.stream("FindDuplicates", {})  # the tiny bundle has no pair model
    assert status == 400 and groups[0]["code"] == "FAILED_PRECONDITION"
    status, results = http.stream("IndexImages", [{"id": "x", "image": {"data": "AAAA"}}])
    assert status == 200 and results[0]["status"] == "FAILED" and results[0]["error"]


def test_multipart_search_and_item_images(http_server, tmp_path: Path) -> None:
    _, http = http_server
    path = tmp_path / "photo.png"
    path.write_bytes(_png(7, 64))
    http.stream(
        "IndexImages", [{"id": "p", "image": {"data": _b64(path.read_bytes())}, "uri": str(path)}]
    )
    boundary = "simclrboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n2\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, data = http.raw("/v1/search", body, f"multipart/form-data; boundary={boundary}")
    assert status == 200 and json.loads(data)["hits"][0]["id"] == "p"
    status, headers, jpeg = http.raw("/v1/image?id=p&size=32", None)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(jpeg)).size) == 32
    status, _, data = http.raw("/v1/image?id=missing", None)
    assert status == 404 and json.loads(data)["code"] == "NOT_FOUND"
    status, _, page = http.raw("/", None)
    assert status == 200 and b"simclr-search" in page
    status, _, schema = http.raw("/openapi.json", None)
    assert status == 200 and "/simclr.v1.ImageSearch/Search" in json.loads(schema)["paths"]


def test_token_limit_and_metrics_are_shared_with_grpc(tiny_bundle, tmp_path, loop_thread) -> None:
    from prometheus_client import REGISTRY

    bundle, _ = tiny_bundle
    running = loop_thread.run(
        start_server(
            make_config(bundle, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0, token="s3cret"),
        )
    )
    try:
        anonymous, allowed = Http(running.http_port), Http(running.http_port, "s3cret")
        status, error = anonymous.call("GetInfo", {})
        assert status == 401 and error["code"] == "UNAUTHENTICATED"
        assert Http(running.http_port, "wrong").call("GetInfo", {})[0] == 401
        assert anonymous.raw("/", None)[0] == 200  # the page itself holds no data
        assert anonymous.raw("/v1/image?id=x", None)[0] == 401
        before = (
            REGISTRY.get_sample_value("simclr_requests_total", {"method": "GetInfo", "code": "OK"})
            or 0
        )
        assert allowed.call("GetInfo", {})[0] == 200
        after = REGISTRY.get_sample_value(
            "simclr_requests_total", {"method": "GetInfo", "code": "OK"}
        )
        assert after == before + 1
        running.limiter.in_flight = running.limiter.max_concurrent  # as if that many calls ran
        status, error = allowed.call("GetInfo", {})
        assert status == 429 and error["code"] == "RESOURCE_EXHAUSTED"
        running.limiter.in_flight = 0
    finally:
        loop_thread.run(running.stop())


def _readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- http examples -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no '<!-- http examples -->' bash block"
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")
    ]


def test_the_readme_curl_examples_run(http_server, tmp_path: Path) -> None:
    _, http = http_server
    (tmp_path / "photo.jpg").write_bytes(_png(3, 64))  # PNG bytes: the server reads the content
    env = {**os.environ, "SIMCLR_HTTP": http.base}
    examples = _readme_examples()
    assert len(examples) >= 3
    for line in examples:
        proc = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {line}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        for out_line in proc.stdout.splitlines():
            answer = json.loads(out_line)  # every answer is JSON
            assert "code" not in answer or answer.get("code") == "OK", (line, answer)
