"""A small Hugging Face Hub on 127.0.0.1: the endpoints ``huggingface_hub``'s ``create_repo`` and
``upload_folder`` call (without ``hf_xet``: plain git-LFS "basic" transfers), storing what arrives.

- ``POST /api/repos/create``                                -> creates the repo (409 if it exists)
- ``POST /api/{type}s/{owner}/{name}/preupload/{revision}``  -> upload mode per file: ``lfs`` for
  binary files (``*.safetensors``, ``*.parquet``), ``regular`` otherwise, like the Hub's rules
- ``POST /{prefix}{owner}/{name}.git/info/lfs/objects/batch``  -> a "basic" upload action per object
- ``PUT  /lfs-upload/{oid}``                                 -> the object's bytes (sha256 checked)
- ``POST /api/{type}s/{owner}/{name}/commit/{revision}``     -> NDJSON commit: header, inline
  ``file`` entries (base64) and ``lfsFile`` entries that must name an uploaded object

Every request must carry ``Authorization: Bearer <token>`` with the server's token (else 401);
``headers_seen`` keeps every request's headers so a test can check the token went nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".parquet", ".bin", ".pt")


# a few of the Hub's license ids (https://huggingface.co/docs/hub/repositories-licenses)
KNOWN_LICENSES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "other"}


def validate_metadata(request: dict) -> list[str]:
    """What the Hub checks in a README's YAML header (a subset): a mapping, a known license id, a
    well-formed ``model-index`` (model repos) or ``configs`` / ``dataset_info`` (dataset repos)."""
    import yaml

    content = request.get("content", "")
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return ["README.md has no YAML metadata header"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"invalid YAML: {exc}"]
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    if "license" in meta and meta["license"] not in KNOWN_LICENSES:
        errors.append(f"license {meta['license']!r} is not a known license id")
    if request.get("repoType") == "model":
        for entry in meta.get("model-index", []):
            for result in entry.get("results", []):
                if not result.get("task", {}).get("type") or not {"name", "type"} <= set(result.get("dataset", {})):
                    errors.append("model-index: each result needs task.type, dataset.name and dataset.type")
                for metric in result.get("metrics", []):
                    if "type" not in metric or not isinstance(metric.get("value"), (int, float)):
                        errors.append("model-index: each metric needs a type and a numeric value")
    if request.get("repoType") == "dataset":
        for config in meta.get("configs", []):
            if "config_name" not in config or not config.get("data_files"):
                errors.append("configs: each config needs config_name and data_files")
        for feature in meta.get("dataset_info", {}).get("features", []):
            if "name" not in feature:
                errors.append("dataset_info.features: each feature needs a name")
    return errors


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}  # (type, id) -> {path: bytes}
        self.private: dict[tuple[str, str], bool] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, payload=None) -> None:
                data = json.dumps(payload if payload is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._send(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def do_POST(self):  # noqa: N802
                body = self._body()
                hub.requests.append(("POST", self.path))
                hub.headers_seen.append(dict(self.headers))
                hub.bodies.append(body)
                if not self._authorised():
                    return
                if self.path == "/api/validate-yaml":
                    errors = validate_metadata(json.loads(body))
                    return self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                               "warnings": []})
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    repo_type = req.get("type") or "model"
                    repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    key = (repo_type, repo_id)
                    if key in hub.repos:
                        return self._send(409, {"error": "You already created this repo", "url": self._url(key)})
                    hub.repos[key] = {}
                    hub.private[key] = req.get("visibility") == "private" or bool(req.get("private"))
                    return self._send(200, {"url": self._url(key), "name": repo_id})
                if m := re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+)/preupload/([^/?]+)", self.path):
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [
                        {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                         "shouldIgnore": False, "oid": None} for f in files]})
                if m := re.fullmatch(r"/(?:datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch", self.path):
                    req = json.loads(body)
                    host = f"http://{self.headers['Host']}"
                    return self._send(200, {"transfer": "basic", "objects": [
                        {"oid": o["oid"], "size": o["size"],
                         "actions": {"upload": {"href": f"{host}/lfs-upload/{o['oid']}"}}}
                        for o in req["objects"]]})
                if m := re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+)/commit/([^/?]+)", self.path):
                    key = (m.group(1), m.group(2))
                    if key not in hub.repos:
                        return self._send(404, {"error": "Repository not found"})
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        value = item["value"]
                        if item["key"] == "file":
                            hub.repos[key][value["path"]] = base64.b64decode(value["content"])
                        elif item["key"] == "lfsFile":
                            if value["oid"] not in hub.lfs_objects:
                                return self._send(422, {"error": f"LFS object {value['oid']} was not uploaded"})
                            hub.repos[key][value["path"]] = hub.lfs_objects[value["oid"]]
                    return self._send(200, {"commitUrl": f"{self._url(key)}/commit/{'0' * 40}",
                                            "commitOid": "0" * 40})
                self._send(404, {"error": f"no route {self.path}"})

            def do_PUT(self):  # noqa: N802
                body = self._body()
                hub.requests.append(("PUT", self.path))
                hub.headers_seen.append(dict(self.headers))
                if m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path):
                    if hashlib.sha256(body).hexdigest() != m.group(1):
                        return self._send(400, {"error": "sha256 mismatch"})
                    hub.lfs_objects[m.group(1)] = body
                    return self._send(200, {})
                self._send(404, {"error": f"no route {self.path}"})

            def _url(self, key) -> str:
                prefix = "datasets/" if key[0] == "dataset" else ""
                return f"http://{self.headers['Host']}/{prefix}{key[1]}"

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
