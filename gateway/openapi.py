"""Generate the OpenAPI 3 document of the edge's REST API from the consult protos.

Usage: python -m gateway.openapi [--check] [--out PATH]
  --check   fail (exit 1) when the checked-in gateway/openapi.yaml differs from a fresh one.

Walks the descriptor set (with source comments): `google.api.http` rules give the paths,
messages and enums give the schemas, following the proto3 JSON mapping exactly as the edge's
transcoder prints it: proto field names (`preserve_proto_field_names: true`, so `request_id`,
not `requestId`; the transcoder also *accepts* lowerCamelCase on input), enums as their names,
64-bit integers as strings, every primitive field printed even when it has its default value.
Roles per operation come from gateway.policy, the table the RBAC config is built from.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

from gateway.descriptor import build_with_protoc, load_descriptor_set
from gateway.policy import HEALTH_PATH, roles_for
from gateway.settings import CONSULT_SERVICE, EDGE_SERVICES

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
JSON = "application/json"
FDP = descriptor_pb2.FieldDescriptorProto

# Source-code-info path numbers (descriptor.proto field numbers).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

_SCALARS: dict[int, dict[str, Any]] = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON prints 64-bit integers as strings (JavaScript numbers lose precision).
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.StringValue": {"type": "string", "nullable": True},
    "google.protobuf.BoolValue": {"type": "boolean", "nullable": True},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double", "nullable": True},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "additionalProperties": True,
    },
}

# Error responses: HTTP status -> (component name, description).
_ERRORS: dict[str, tuple[str, str]] = {
    "400": (
        "BadRequest",
        "Malformed JSON (the message gives line, column and byte offset), an unknown field, "
        "a field of the wrong type or an invalid request (INVALID_ARGUMENT; `details` holds "
        "google.rpc.ErrorInfo and, for fields, google.rpc.BadRequest naming them by path, e.g. "
        "`intake.symptoms.dysurya` or `intake.history.recent_antibiotics.entries[0].drug`).",
    ),
    "401": ("Unauthenticated", "No bearer token, or one that is invalid or expired."),
    "403": (
        "PermissionDenied",
        "The token's roles do not allow this operation, or its audience is wrong.",
    ),
    "404": ("NotFound", "No such consultation (or no such path)."),
    "413": ("PayloadTooLarge", "The request body is larger than the edge accepts."),
    "429": (
        "TooManyRequests",
        "Rate limited: too many requests from this client; see Retry-After.",
    ),
    "503": ("Unavailable", "The consult service (or triage behind it) cannot be reached."),
    "504": ("GatewayTimeout", "The consultation did not finish within the edge's timeout."),
}


@dataclass(frozen=True)
class _Comments:
    by_path: dict[tuple[str, tuple[int, ...]], str]

    def get(self, file: str, path: Iterable[int]) -> str:
        return self.by_path.get((file, tuple(path)), "")


def _comments(fds: descriptor_pb2.FileDescriptorSet) -> _Comments:
    found: dict[tuple[str, tuple[int, ...]], str] = {}
    for file in fds.file:
        if not file.name.startswith("utimesh/"):
            continue  # third-party comments would tie the document to their installed version
        for location in file.source_code_info.location:
            text = location.leading_comments.strip() or location.trailing_comments.strip()
            if text:
                lines = [line.strip() for line in text.splitlines()]
                found[(file.name, tuple(location.path))] = " ".join(x for x in lines if x)
    return _Comments(found)


@dataclass(frozen=True)
class _Message:
    proto: descriptor_pb2.DescriptorProto
    file: str
    path: tuple[int, ...]


@dataclass(frozen=True)
class _Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    file: str
    path: tuple[int, ...]


class _Index:
    """Every message and enum of the set by full name, with its source path for comments."""

    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, _Enum] = {}
        self.services: dict[str, tuple[descriptor_pb2.ServiceDescriptorProto, str, int]] = {}
        for file in fds.file:
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(message, prefix, file.name, (_FILE_MESSAGE, i))
            for i, enum in enumerate(file.enum_type):
                self.enums[prefix + enum.name] = _Enum(enum, file.name, (_FILE_ENUM, i))
            for i, service in enumerate(file.service):
                self.services[prefix + service.name] = (service, file.name, i)

    def _add_message(
        self, message: descriptor_pb2.DescriptorProto, prefix: str, file: str, path: tuple[int, ...]
    ) -> None:
        name = prefix + message.name
        self.messages[name] = _Message(message, file, path)
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, f"{name}.", file, (*path, _MSG_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = _Enum(enum, file, (*path, _MSG_ENUM, i))


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _SchemaBuilder:
    def __init__(self, index: _Index, comments: _Comments) -> None:
        self.index = index
        self.comments = comments
        self.schemas: dict[str, dict[str, Any]] = {}
        self._pending: deque[str] = deque()

    def want(self, type_name: str) -> dict[str, Any]:
        """A schema referring to `type_name` (message or enum), scheduling its definition."""
        name = type_name.lstrip(".")
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.schemas and name not in self._pending:
            self._pending.append(name)
        return _ref(name)

    def field_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
            entry = self.index.messages.get(field.type_name.lstrip("."))
            if entry is not None and entry.proto.options.map_entry:
                value = next(f for f in entry.proto.field if f.name == "value")
                return {"type": "object", "additionalProperties": self.field_schema(value)}
            item = self.want(field.type_name)
        elif field.type == FDP.TYPE_ENUM:
            item = self.want(field.type_name)
        else:
            item = dict(_SCALARS[field.type])
        if field.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": item}
        return item

    def properties(
        self, message: _Message, skip: frozenset[str] = frozenset()
    ) -> dict[str, dict[str, Any]]:
        props: dict[str, dict[str, Any]] = {}
        for i, field in enumerate(message.proto.field):
            if field.name in skip:
                continue
            schema = self.field_schema(field)
            text = self.comments.get(message.file, (*message.path, _MSG_FIELD, i))
            if text:
                # OpenAPI 3.0 ignores siblings of $ref: wrap to keep the field's description.
                schema = (
                    {"allOf": [schema], "description": text}
                    if "$ref" in schema
                    else {
                        **schema,
                        "description": text,
                    }
                )
            props[field.name] = schema
        return props

    def _message_schema(self, name: str, message: _Message) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        text = self.comments.get(message.file, message.path)
        oneofs = [
            (
                decl.name,
                [
                    f.name
                    for f in message.proto.field
                    if f.HasField("oneof_index") and f.oneof_index == i and not f.proto3_optional
                ],
            )
            for i, decl in enumerate(message.proto.oneof_decl)
        ]
        notes = [
            f"At most one of {', '.join(f'`{m}`' for m in members)} is set (oneof `{group}`)."
            for group, members in oneofs
            if members
        ]
        description = " ".join(x for x in (text, *notes) if x)
        if description:
            schema["description"] = description
        schema["properties"] = self.properties(message)
        return schema

    def _enum_schema(self, entry: _Enum) -> dict[str, Any]:
        names = [value.name for value in entry.proto.value]
        lines = [self.comments.get(entry.file, entry.path)]
        for i, value in enumerate(entry.proto.value):
            text = self.comments.get(entry.file, (*entry.path, _ENUM_VALUE, i))
            if text:
                lines.append(f"- `{value.name}`: {text}")
        schema: dict[str, Any] = {"type": "string", "enum": names}
        description = "\n".join(line for line in lines if line)
        if description:
            schema["description"] = description
        return schema

    def drain(self) -> None:
        while self._pending:
            name = self._pending.popleft()
            if name in self.schemas:
                continue
            if name in self.index.messages:
                self.schemas[name] = {}  # reserve first: recursive messages terminate
                self.schemas[name] = self._message_schema(name, self.index.messages[name])
            elif name in self.index.enums:
                self.schemas[name] = self._enum_schema(self.index.enums[name])
            else:
                raise KeyError(f"type {name} is not in the descriptor set")


_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


def _path(template: str) -> tuple[str, list[tuple[str, str, str]]]:
    """An HTTP rule template as an OpenAPI path, and its parameters (name, field, pattern).

    `{name=consultations/*}` becomes `consultations/{consultation_id}`: OpenAPI path parameters
    cannot contain `/`, so the resource name's collection stays literal.
    """
    params: list[tuple[str, str, str]] = []

    def replace(match: re.Match[str]) -> str:
        field, pattern = match.group(1), match.group(2) or "*"
        # google.longrunning's `operations/**`: our operation names have one segment after it.
        pattern = pattern.replace("**", "*")
        segments = pattern.split("/")
        out: list[str] = []
        for i, segment in enumerate(segments):
            if segment != "*":
                out.append(segment)
                continue
            collection = segments[i - 1] if i > 0 else field
            param = f"{collection.removesuffix('s')}_id" if i > 0 else field
            params.append((param, field, pattern))
            out.append(f"{{{param}}}")
        return "/".join(out)

    return _VARIABLE.sub(replace, template), params


def _http_rule(method: descriptor_pb2.MethodDescriptorProto) -> http_pb2.HttpRule | None:
    if not method.options.HasExtension(annotations_pb2.http):
        return None
    rule: http_pb2.HttpRule = method.options.Extensions[annotations_pb2.http]
    return rule


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None or kind == "custom":
        raise ValueError("custom HTTP verbs are not supported")
    return kind, str(getattr(rule, kind))


def _operation(
    builder: _SchemaBuilder,
    service: str,
    file: str,
    service_index: int,
    method_index: int,
    method: descriptor_pb2.MethodDescriptorProto,
    rule: http_pb2.HttpRule,
) -> tuple[str, str, dict[str, Any]]:
    verb, template = _verb_and_template(rule)
    path, params = _path(template)
    request = builder.index.messages[method.input_type.lstrip(".")]
    response_name = method.output_type.lstrip(".")
    text = builder.comments.get(file, (_FILE_SERVICE, service_index, _SERVICE_METHOD, method_index))
    roles = roles_for(method.name)
    description = " ".join(
        x
        for x in (
            text,
            f"Roles: {', '.join(roles)}." if roles else "No role may call it.",
            f"gRPC: `/{service}/{method.name}`.",
        )
        if x
    )
    operation: dict[str, Any] = {
        "operationId": method.name,
        "summary": (text.split(". ")[0].rstrip(".") if text else method.name),
        "description": description,
        "tags": [service.rsplit(".", 1)[-1]],
        "x-utimesh-roles": list(roles),
    }
    bound = {field for _, field, _ in params}
    parameters: list[dict[str, Any]] = [
        {
            "name": param,
            "in": "path",
            "required": True,
            "description": f"Fills `{field}` = `{pattern.replace('*', '{' + param + '}')}`.",
            "schema": {"type": "string", "pattern": r"^[^/]+$"},
        }
        for param, field, pattern in params
    ]
    if not rule.body:
        for field in request.proto.field:
            if field.name in bound or field.type == FDP.TYPE_MESSAGE:
                continue
            parameters.append(
                {"name": field.name, "in": "query", "schema": builder.field_schema(field)}
            )
    if parameters:
        operation["parameters"] = parameters
    if rule.body == "*":
        schema = (
            {"type": "object", "properties": builder.properties(request, frozenset(bound))}
            if bound
            else builder.want(method.input_type)
        )
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": schema}}}
    elif rule.body:
        field = next(f for f in request.proto.field if f.name == rule.body)
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": builder.field_schema(field)}},
        }
    ok_text = "OK"
    if method.server_streaming:
        ok_text = (
            "Newline-delimited JSON, sent as it happens: one "
            f"`{response_name.rsplit('.', 1)[-1]}` object per line. Over HTTP/1.1 an error "
            "after the first line cannot change the status; use HTTP/2 to receive it."
        )
        operation["x-streaming"] = "newline-delimited-json"
    ok = {"description": ok_text, "content": {JSON: {"schema": builder.want(response_name)}}}
    responses: dict[str, Any] = {"200": ok}
    for status, (component, _) in _ERRORS.items():
        if (status == "413" and not rule.body) or (status == "404" and not params):
            continue
        responses[status] = {"$ref": f"#/components/responses/{component}"}
    operation["responses"] = responses
    return path, verb, operation


_ERROR_INFO: dict[str, Any] = {
    "type": "object",
    "description": "google.rpc.ErrorInfo: why the call failed, as a stable `reason` within "
    "`domain` (e.g. consult.utimesh.dev).",
    "properties": {
        "@type": {"type": "string", "enum": ["type.googleapis.com/google.rpc.ErrorInfo"]},
        "reason": {"type": "string", "description": "UPPER_SNAKE_CASE; stable."},
        "domain": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_BAD_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "google.rpc.BadRequest: the request fields that are wrong.",
    "properties": {
        "@type": {"type": "string", "enum": ["type.googleapis.com/google.rpc.BadRequest"]},
        "field_violations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {
                        "type": "string",
                        "description": "Path of the field, e.g. `intake.age_years`.",
                    },
                    "description": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}


def _status_schema() -> dict[str, Any]:
    # The detail types are written out (not walked from googleapis' protos) so that the
    # document does not change with the installed googleapis-common-protos version.
    return {
        "type": "object",
        "description": "A google.rpc.Status: every error from the edge or the service has this "
        "shape. Branch on `code` and the ErrorInfo `reason`, never on `message`.",
        "required": ["code", "message"],
        "properties": {
            "code": {
                "type": "integer",
                "format": "int32",
                "description": "google.rpc.Code: 3 INVALID_ARGUMENT, 4 DEADLINE_EXCEEDED, "
                "5 NOT_FOUND, 7 PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE, "
                "16 UNAUTHENTICATED.",
            },
            "message": {"type": "string", "description": "For humans; may change."},
            "details": {
                "type": "array",
                "description": "Typed details, each with its `@type` "
                "(type.googleapis.com/google.rpc.ErrorInfo or .../google.rpc.BadRequest).",
                "items": {"anyOf": [_ref("google.rpc.ErrorInfo"), _ref("google.rpc.BadRequest")]},
            },
        },
    }


def build_document(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI 3.0 document (a plain dict, deterministic) for the consult service."""
    index = _Index(fds)
    builder = _SchemaBuilder(index, _comments(fds))
    paths: dict[str, dict[str, Any]] = {}
    for service_name in EDGE_SERVICES:
        svc, svc_file, svc_index = index.services[service_name]
        for method_index, method in enumerate(svc.method):
            rule = _http_rule(method)
            if rule is None or not roles_for(method.name):
                continue  # not published at the edge (e.g. DeleteOperation)
            path, verb, operation = _operation(
                builder, service_name, svc_file, svc_index, method_index, method, rule
            )
            paths.setdefault(path, {})[verb] = operation
    service, file, service_index = index.services[CONSULT_SERVICE]
    paths[HEALTH_PATH] = {
        "get": {
            "operationId": "Health",
            "summary": "Edge health",
            "description": "200 when the edge is up and the consult service reports SERVING "
            "to Envoy's gRPC health checks; 503 otherwise. Needs no token.",
            "tags": ["Health"],
            "security": [],
            "responses": {
                "200": {"description": "Serving"},
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    }
    builder.drain()
    schemas = {name: builder.schemas[name] for name in sorted(builder.schemas)}
    schemas["Status"] = _status_schema()
    schemas["google.rpc.ErrorInfo"] = _ERROR_INFO
    schemas["google.rpc.BadRequest"] = _BAD_REQUEST
    service_text = builder.comments.get(file, (_FILE_SERVICE, service_index))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "utimesh consultations",
            "version": "v1",
            "description": (
                f"{service_text}\n\n"
                "Generated from the protos by `python -m gateway.openapi`; do not edit. "
                "JSON follows the proto3 mapping with the proto field names (snake_case; "
                "lowerCamelCase is also accepted on input), enums as names, 64-bit integers "
                "as strings, and every primitive field present in responses. Unknown query "
                "parameters and unknown body fields are rejected (400 naming the field), so a "
                "misspelt optional field is never silently ignored. Every result is a DRAFT "
                "for prescriber sign-off."
            ),
        },
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": service.name, "description": service_text},
            {
                "name": "Operations",
                "description": "google.longrunning.Operations: queued consultations "
                "(StartConsultation) and their progress, result or error.",
            },
            {"name": "Health", "description": "Probes."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "RS256 JWT from the utimesh issuer, with the edge's audience "
                    "and a `roles` claim (clinician, pharmacist, prescriber, auditor, operator).",
                }
            },
            "responses": {
                component: {
                    "description": text,
                    "content": {JSON: {"schema": _ref("Status")}},
                }
                for component, text in _ERRORS.values()
            },
            "schemas": schemas,
        },
    }


def render(document: dict[str, Any]) -> str:
    """YAML text, stable across runs."""
    header = "# Generated by `python -m gateway.openapi` from protos/. Do not edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def generate() -> str:
    """Build the descriptor set with protoc (comments included) and render the document."""
    with tempfile.TemporaryDirectory() as tmp:
        fds = load_descriptor_set(build_with_protoc(Path(tmp) / "consult.pb"))
    return render(build_document(fds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    parser.add_argument("--out", type=Path, default=OPENAPI_PATH, help="where the document goes")
    args = parser.parse_args(argv)
    fresh = generate()
    out: Path = args.out
    if args.check:
        current = out.read_text() if out.exists() else ""
        if current != fresh:
            print(f"{out} is out of date; run `python -m gateway.openapi`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(fresh)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
