"""Write the HTTP API's OpenAPI 3.1 schema, ``serving/http/openapi.json``, from the .proto's
descriptors: one path per RPC, one schema per message (the protobuf JSON mapping: 64-bit integers
and bytes as strings, enums by name). The gateway serves it at ``/openapi.json``; the test
``tests/serving/test_http.py`` fails when it is stale.

    .venv/bin/python scripts/gen_openapi.py           # rewrite it
    .venv/bin/python scripts/gen_openapi.py --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.protobuf.descriptor import FieldDescriptor as F  # noqa: E402

from simclr_search.protos.simclr.v1 import search_pb2 as pb  # noqa: E402

OUT = ROOT / "serving" / "http" / "openapi.json"
SCALARS = {
    F.TYPE_DOUBLE: {"type": "number"},
    F.TYPE_FLOAT: {"type": "number"},
    F.TYPE_INT64: {"type": "string", "format": "int64"},
    F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
ERROR = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "the gRPC status code's name"},
        "message": {"type": "string"},
    },
    "required": ["code", "message"],
}


def _field(field) -> dict:
    if field.type == F.TYPE_MESSAGE:
        schema = {"$ref": f"#/components/schemas/{field.message_type.name}"}
    elif field.type == F.TYPE_ENUM:
        schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        schema = dict(SCALARS[field.type])
    if field.is_repeated:
        schema = {"type": "array", "items": schema}
    return schema


def _messages() -> dict[str, dict]:
    out = {}
    pending = list(pb.DESCRIPTOR.message_types_by_name.values())
    while pending:
        message = pending.pop()
        pending.extend(message.nested_types)
        properties = {f.name: _field(f) for f in message.fields}
        schema: dict = {"type": "object", "properties": properties}
        oneofs = [o for o in message.oneofs if len(o.fields) > 1]
        if oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.name for f in o.fields)}" for o in oneofs
            )
        out[message.name] = schema
    out["Error"] = ERROR
    return dict(sorted(out.items()))


def schema() -> dict:
    service = pb.DESCRIPTOR.services_by_name["ImageSearch"]
    paths = {}
    for method in service.methods:
        streaming_in, streaming_out = method.client_streaming, method.server_streaming
        ndjson = "application/x-ndjson"
        paths[f"/{service.full_name}/{method.name}"] = {
            "post": {
                "operationId": method.name,
                "summary": f"{method.name}"
                + (" (newline-delimited JSON)" if streaming_in or streaming_out else ""),
                "requestBody": {
                    "required": True,
                    "content": {
                        ndjson if streaming_in else "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{method.input_type.name}"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "one message per line"
                        if streaming_out
                        else "the response message",
                        "content": {
                            ndjson if streaming_out else "application/json": {
                                "schema": {
                                    "$ref": f"#/components/schemas/{method.output_type.name}"
                                }
                            }
                        },
                    },
                    "default": {
                        "description": "an error, with the HTTP status of its gRPC code",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
        }
    paths["/v1/search"] = {
        "post": {
            "operationId": "SearchUpload",
            "summary": "Search with an uploaded file (multipart/form-data: image, k, collection)",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "image": {"type": "string", "contentMediaType": "image/*"},
                                "k": {"type": "integer"},
                                "collection": {"type": "string"},
                            },
                            "required": ["image"],
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "as Search",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SearchResponse"}
                        }
                    },
                }
            },
        }
    }
    paths["/v1/image"] = {
        "get": {
            "operationId": "ItemImage",
            "summary": "A stored item's picture as a JPEG (read from its uri on the server)",
            "parameters": [
                {"name": "id", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "collection", "in": "query", "schema": {"type": "string"}},
                {"name": "size", "in": "query", "schema": {"type": "integer", "default": 256}},
            ],
            "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "simclr-search HTTP/JSON API",
            "version": "1",
            "description": "Every simclr.v1.ImageSearch RPC over HTTP with the protobuf JSON "
            "mapping; made from protos/simclr/v1/search.proto by scripts/gen_openapi.py.",
        },
        "components": {
            "schemas": _messages(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    text = json.dumps(schema(), indent=2) + "\n"
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"stale: {OUT.relative_to(ROOT)}\nrun: .venv/bin/python scripts/gen_openapi.py")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
