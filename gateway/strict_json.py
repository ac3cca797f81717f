"""Strict JSON request bodies at the edge: an unknown field is a 400 that names it.

Envoy's grpc_json_transcoder drops JSON keys it does not know before it encodes the gRPC message
(no option rejects them; envoyproxy/envoy#46623), so neither Envoy nor the service could tell a
client that `max_roundz` or `intake.symptoms.dysurya` was ignored. For a clinical intake a
silently dropped answer is a wrong answer, so the edge checks JSON bodies itself, with an
`envoy.filters.http.lua` filter placed just before the transcoder (after the body limit), whose
script is generated here from the very descriptor set the transcoder reads:

* **Which requests.** Those the transcoder will turn into gRPC with a body: a `google.api.http`
  rule (or additional binding) with `body`, of the configured services, matched on the exact
  method and on the path, read every way the transcoder might read it (query dropped; a
  `:verb` split off or not; a trailing `/` ignored; percent-escapes decoded or not), so the
  script checks at least every request the transcoder transcodes, unless the content type is gRPC
  by Envoy's own test (`application/grpc` or `application/grpc+...`), which the transcoder
  passes through untouched. Everything else returns at once.
* **The schema.** Every message type reachable from a body, with the keys the transcoder
  accepts for each field (the proto name and the json_name, lowerCamelCase unless the proto sets
  another), and for each key what its value is: a message (its keys checked, recursively; an
  array of it element by element), a map (any key; message values checked; a list of
  entries also accepted), or anything else (scalars and enums: left to the transcoder, which
  type-checks them). Well-known types are not walked: `google.protobuf.Struct`, `Value`,
  `ListValue` and `Any` take arbitrary keys by design (an `Any` is not resolved by its
  `@type`), the others are JSON scalars; `Empty` is an ordinary message with no fields. Request
  bodies of type `google.api.HttpBody` are raw bytes and not checked. None of these occur in the
  consult API's requests today.
* **The scanner.** A strict RFC 8259 parser in Lua: one pass over the bytes, no backtracking,
  so its time is linear in the body, which the buffer filter has already capped (413); nesting
  is capped at 100 levels, protobuf's own JSON limit. It reads with `string.byte` loops rather
  than patterns because LuaJIT compiles those (patterns abort its traces): about 2 µs for a
  typical 1.2 KB CreateConsultation body, 1-2 ms for the worst 1 MB bodies. Escaped keys are
  decoded before the lookup (`"\\u0062ogus"` is `bogus`). Anything that is not strict JSON is
  refused, even what the transcoder's lenient parser takes (checked: single quotes, bare keys,
  trailing commas, raw tabs in strings).
* **The answer.** At the first unknown key: HTTP 400 with the edge's google.rpc.Status JSON,
  `{"code": 3, "message": "unknown field \\"intake.symptoms.dysurya\\" ...", "details": [...]}`,
  details an ErrorInfo (reason `UNKNOWN_FIELD`, domain `edge.utimesh.dev`, metadata `field`)
  and a BadRequest whose field violation names the path: keys as the client sent them, joined
  by `.`, array elements as `[i]` (from 0), e.g.
  `intake.history.recent_antibiotics.entries[0].foo`. Malformed JSON: HTTP 400, reason
  `MALFORMED_JSON`, the message and metadata give the line, column and byte offset (Envoy's own
  answer would be the parser's bare text). Nesting deeper than 100: 400, reason `JSON_TOO_DEEP`.
  The local-reply mapper passes these bodies through unchanged: the script sets the dynamic
  metadata `utimesh.strict_json: {rejected: true}` before it responds, and the first mapper
  matches exactly that.
* **Fails closed.** A Lua error is otherwise logged and the request *continues* (Envoy's
  behaviour, checked); so the check runs under `pcall` and any error of the script itself
  answers 500 (code INTERNAL, reason `STRICT_JSON_FAILED`) instead of passing the body on.

Checked only by the transcoder, as before: value types, enum names, ranges of numbers, what the
service validates itself (INVALID_ARGUMENT with field violations). A request whose roles do not
allow the method still gets this 400 before RBAC's 403 (RBAC runs after the transcoder, on the
gRPC path), as it already did for a wrongly typed value.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto

METADATA_NAMESPACE: Final = "utimesh.strict_json"
"""Dynamic metadata namespace the script sets (`rejected: true`) before it answers."""
METADATA_KEY: Final = "rejected"
ERROR_DOMAIN: Final = "edge.utimesh.dev"
MAX_DEPTH: Final = 100
"""Nesting limit of objects and arrays (protobuf's JSON parser stops at 100 as well)."""

_FREE_WELL_KNOWN: Final = frozenset(
    {
        # Arbitrary JSON by design (Any: "@type" plus the fields of a type named at run time).
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
        # JSON scalars (strings or numbers) in the proto3 JSON mapping.
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
_RAW_BODY: Final = "google.api.HttpBody"


@dataclass(frozen=True)
class MapOf:
    """A map field: any key; `values` is the message type of the values (None: not walked)."""

    values: str | None
    entry: str
    """The map-entry message (`key`, `value`): a map may also be sent as a list of entries."""


Ref = str | MapOf | None
"""What a JSON value is checked against: a message type (full name), a map, or nothing."""


@dataclass(frozen=True)
class Message:
    """A message type: every JSON key the transcoder accepts for it, and what its value is."""

    name: str
    keys: dict[str, Ref]


@dataclass(frozen=True)
class BodyRoute:
    """A transcoded HTTP rule with a body: how to recognise it and what its body is."""

    method: str
    template: str
    pattern: str
    """Lua pattern over the normalised path (see the module docstring)."""
    body: Ref
    rpc: str


@dataclass(frozen=True)
class Schema:
    """Everything the generated script knows, in a stable order."""

    messages: dict[str, Message] = field(default_factory=dict)
    routes: tuple[BodyRoute, ...] = ()


class SchemaError(ValueError):
    """The descriptor set lacks a type or holds an HTTP rule the check cannot represent."""


def json_name(proto_name: str) -> str:
    """protoc's default json_name (ToJsonName): drop `_`, upper-case the letter after it."""
    out: list[str] = []
    upper = False
    for char in proto_name:
        if char == "_":
            upper = True
        elif upper:
            out.append(char.upper())
            upper = False
        else:
            out.append(char)
    return "".join(out)


def _index(
    fds: descriptor_pb2.FileDescriptorSet,
) -> tuple[
    dict[str, descriptor_pb2.DescriptorProto], dict[str, descriptor_pb2.ServiceDescriptorProto]
]:
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}

    def add(message: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = prefix + message.name
        messages[name] = message
        for nested in message.nested_type:
            add(nested, f"{name}.")

    for file in fds.file:
        prefix = f"{file.package}." if file.package else ""
        for message in file.message_type:
            add(message, prefix)
        for service in file.service:
            services[prefix + service.name] = service
    return messages, services


class _Builder:
    def __init__(self, messages: dict[str, descriptor_pb2.DescriptorProto]) -> None:
        self._protos = messages
        self.messages: dict[str, Message] = {}
        self._pending: deque[str] = deque()

    def _message(self, name: str) -> descriptor_pb2.DescriptorProto:
        try:
            return self._protos[name]
        except KeyError:
            raise SchemaError(f"type {name} is not in the descriptor set") from None

    def ref(self, type_name: str) -> str | None:
        """The check for a value of message type `type_name` (scheduling its definition)."""
        name = type_name.lstrip(".")
        if name in _FREE_WELL_KNOWN:
            return None
        if name not in self.messages and name not in self._pending:
            self._message(name)
            self._pending.append(name)
        return name

    def field_ref(self, field: descriptor_pb2.FieldDescriptorProto) -> Ref:
        if field.type not in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
            return None  # scalars and enums: the transcoder type-checks them
        name = field.type_name.lstrip(".")
        entry = self._message(name) if name not in _FREE_WELL_KNOWN else None
        if entry is not None and entry.options.map_entry:
            value = next(f for f in entry.field if f.name == "value")
            self.ref(name)
            # Map values are never maps themselves: a message (walked) or a scalar.
            values = self.ref(value.type_name) if value.type == FDP.TYPE_MESSAGE else None
            return MapOf(values=values, entry=name)
        return self.ref(name)

    def drain(self) -> None:
        while self._pending:
            name = self._pending.popleft()
            if name in self.messages:
                continue
            self.messages[name] = Message(name, {})  # reserve first: recursive types terminate
            keys: dict[str, Ref] = {}
            for f in self._message(name).field:
                ref = self.field_ref(f)
                keys[f.name] = ref
                keys.setdefault(f.json_name or json_name(f.name), ref)
            self.messages[name] = Message(name, keys)

    def body_ref(self, input_type: str, body: str) -> Ref:
        """What the body of a rule is parsed as: the request (`*`) or one of its fields."""
        if body == "*":
            return self.ref(input_type)
        message = self._message(input_type.lstrip("."))
        for part in body.split(".")[:-1]:
            f = next((f for f in message.field if f.name == part), None)
            if f is None or f.type != FDP.TYPE_MESSAGE:
                raise SchemaError(f"body path {body!r} of {input_type} does not resolve")
            message = self._message(f.type_name.lstrip("."))
        last = body.split(".")[-1]
        f = next((f for f in message.field if f.name == last), None)
        if f is None:
            raise SchemaError(f"body field {body!r} of {input_type} does not exist")
        return self.field_ref(f)


def _rules(rule: http_pb2.HttpRule) -> Iterator[http_pb2.HttpRule]:
    yield rule
    for extra in rule.additional_bindings:
        yield from _rules(extra)


def _method_and_template(rule: http_pb2.HttpRule) -> tuple[str, str] | None:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        return None
    if kind == "custom":
        return str(rule.custom.kind), str(rule.custom.path)
    return kind.upper(), str(getattr(rule, kind))


_VARIABLE = re.compile(r"\{[^}=]*(?:=([^}]*))?\}")
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


def lua_pattern(template: str) -> str:
    """An anchored Lua pattern that matches every path the HTTP rule template can match.

    Variables become their segment patterns (`{name}` is `*`); `*` matches one segment, `**`
    any rest; a trailing `:verb` is literal. Lua patterns have no alternation, which templates
    do not need.
    """
    if not template.startswith("/"):
        raise SchemaError(f"HTTP rule template must start with '/': {template!r}")
    expanded = _VARIABLE.sub(lambda m: m.group(1) or "*", template)
    verb = ""
    last = expanded.rsplit("/", 1)[-1]
    if ":" in last:
        head, _, tail = last.rpartition(":")
        verb = ":" + tail
        expanded = expanded[: len(expanded) - len(last)] + head
    out: list[str] = []
    for segment in expanded.split("/")[1:]:
        if segment == "**":
            out.append(".*")
        elif segment == "*":
            out.append("[^/]*")
        else:
            out.append(_LUA_MAGIC.sub(r"%\1", segment))
    # A template ending in `/**` also matches the bare prefix, hence the optional slash.
    path = "/" + "/".join(out)
    if path.endswith("/.*"):
        path = path[: -len("/.*")] + ".*"
    path = path.rstrip("/")
    return "^" + path + _LUA_MAGIC.sub(r"%\1", verb) + "$"


def build_schema(fds: descriptor_pb2.FileDescriptorSet, services: Iterable[str]) -> Schema:
    """The check's schema for the body-carrying HTTP rules of `services` in `fds`."""
    messages, service_index = _index(fds)
    builder = _Builder(messages)
    routes: list[BodyRoute] = []
    for service_name in services:
        service = service_index.get(service_name)
        if service is None:
            raise SchemaError(f"service {service_name} is not in the descriptor set")
        for method in service.method:
            if not method.options.HasExtension(annotations_pb2.http):
                continue
            for rule in _rules(method.options.Extensions[annotations_pb2.http]):
                parts = _method_and_template(rule)
                if parts is None or not rule.body:
                    continue
                if rule.body == "*" and method.input_type.lstrip(".") == _RAW_BODY:
                    continue
                body = builder.body_ref(method.input_type, str(rule.body))
                if body == _RAW_BODY:
                    continue
                http_method, template = parts
                routes.append(
                    BodyRoute(
                        method=http_method,
                        template=template,
                        pattern=lua_pattern(template),
                        body=body,
                        rpc=f"{service_name}/{method.name}",
                    )
                )
    builder.drain()
    return Schema(messages=builder.messages, routes=tuple(routes))


# --- the Lua script --------------------------------------------------------------------------


def lua_string(text: str) -> str:
    """A Lua string literal for `text` (UTF-8; anything not printable ASCII as \\ddd)."""
    out = ['"']
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def _schema_lua(schema: Schema) -> str:
    ids = {name: i for i, name in enumerate(schema.messages, start=1)}

    def ref(value: Ref) -> str:
        if value is None:
            return "false"
        if isinstance(value, MapOf):
            values = ref(value.values)
            return f"{{values = {values}, entry = M[{ids[value.entry]}]}}"
        return f"M[{ids[value]}]"

    lines = ["local M = {}"]
    for name, i in ids.items():
        lines.append(f"M[{i}] = {{name = {lua_string(name)}, fields = {{}}}}")
    for name, message in schema.messages.items():
        if not message.keys:
            continue
        lines.append(f"do local f = M[{ids[name]}].fields")
        lines += [f"  f[{lua_string(key)}] = {ref(value)}" for key, value in message.keys.items()]
        lines.append("end")
    lines.append("local ROUTES = {")
    for route in schema.routes:
        lines.append(
            f"  {{method = {lua_string(route.method)}, pattern = {lua_string(route.pattern)},"
            f" body = {ref(route.body)}}}, -- {route.rpc}"
        )
    lines.append("}")
    return "\n".join(lines)


# The schema-independent part. Lua 5.1 / LuaJIT (Envoy's runtime). `s` is the whole body.
_RUNTIME = r"""
local byte, char, find, sub, gsub, format = string.byte, string.char, string.find, string.sub, string.gsub, string.format
local concat, floor, tonumber, type, pcall, error, tostring = table.concat, math.floor, tonumber, type, pcall, error, tostring

-- Errors of the check are tables; anything else raised is a bug of this script.
local function malformed(pos, what) error({reason = "MALFORMED_JSON", pos = pos, what = what}, 0) end
local function too_deep(pos)
  error({reason = "JSON_TOO_DEEP", pos = pos, what = "nested deeper than " .. MAX_DEPTH .. " levels"}, 0)
end

local function ws(s, i)
  local c = byte(s, i)
  while c == 32 or c == 10 or c == 13 or c == 9 do i = i + 1; c = byte(s, i) end
  return i
end

local SIMPLE_ESCAPE = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t"}

-- s[i] is '"'. Returns the index after the closing quote and whether escapes occur.
local function str(s, i)
  local j, escaped = i + 1, false
  while true do
    local k, c = j, byte(s, j)
    while c and c >= 32 and c ~= 34 and c ~= 92 do k = k + 1; c = byte(s, k) end
    if not c then malformed(#s + 1, "unterminated string") end
    if c == 34 then return k + 1, escaped end
    if c ~= 92 then malformed(k, "control character in a string") end
    escaped = true
    c = byte(s, k + 1)
    if c == 117 then
      if not find(s, "^%x%x%x%x", k + 2) then malformed(k, "invalid \\u escape") end
      j = k + 6
    elseif c and SIMPLE_ESCAPE[c] then
      j = k + 2
    else
      malformed(k, "invalid escape")
    end
  end
end

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- The text of a string token whose raw content is s[i..j] (escapes already validated).
local function unescape(s, i, j)
  local out, n, k = {}, 0, i
  while k <= j do
    local b = find(s, "\\", k, true)
    if not b or b > j then n = n + 1; out[n] = sub(s, k, j); break end
    if b > k then n = n + 1; out[n] = sub(s, k, b - 1) end
    local c = byte(s, b + 1)
    if c == 117 then
      local cp, nxt = tonumber(sub(s, b + 2, b + 5), 16), b + 6
      if cp >= 0xD800 and cp <= 0xDBFF and sub(s, nxt, nxt + 1) == "\\u" then
        local lo = tonumber(sub(s, nxt + 2, nxt + 5), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp, nxt = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00), nxt + 6
        end
      end
      if cp >= 0xD800 and cp <= 0xDFFF then cp = 0xFFFD end
      n = n + 1; out[n] = utf8(cp); k = nxt
    else
      n = n + 1; out[n] = SIMPLE_ESCAPE[c]; k = b + 2
    end
  end
  return concat(out)
end

local function digits(s, j) -- the index after a run of ASCII digits starting at j
  local c = byte(s, j)
  while c and c >= 48 and c <= 57 do j = j + 1; c = byte(s, j) end
  return j
end

local function num(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local c = byte(s, j)
  if c == 48 then
    j = j + 1
  elseif c and c >= 49 and c <= 57 then
    j = digits(s, j + 1)
  else
    malformed(j, "invalid number")
  end
  if byte(s, j) == 46 then
    local k = digits(s, j + 1)
    if k == j + 1 then malformed(k, "invalid number") end
    j = k
  end
  c = byte(s, j)
  if c == 101 or c == 69 then
    j = j + 1
    c = byte(s, j)
    if c == 43 or c == 45 then j = j + 1 end
    local k = digits(s, j)
    if k == j then malformed(k, "invalid number") end
    j = k
  end
  return j
end

local function unknown(path, depth, key, spec)
  local parts, n = {}, 0
  for d = 1, depth - 1 do
    local p = path[d]
    if type(p) == "number" then
      n = n + 1; parts[n] = "[" .. p .. "]"
    else
      if n > 0 then n = n + 1; parts[n] = "." end
      n = n + 1; parts[n] = p
    end
  end
  if n > 0 then n = n + 1; parts[n] = "." end
  n = n + 1; parts[n] = key
  error({reason = "UNKNOWN_FIELD", field = concat(parts), type = spec.name}, 0)
end

local value

-- spec: false (not walked), a message {name, fields} or a map {values, entry}.
local function object(s, i, spec, depth, path)
  if depth > MAX_DEPTH then too_deep(i) end
  local fields, is_map, values = nil, false, false
  if spec then
    fields = spec.fields
    if not fields then is_map, values = true, spec.values end
  end
  i = ws(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then malformed(i, "expected a string key") end
    local j, escaped = str(s, i)
    local child = false
    if fields then
      local key = escaped and unescape(s, i + 1, j - 2) or sub(s, i + 1, j - 2)
      child = fields[key]
      if child == nil then unknown(path, depth, key, spec) end
      path[depth] = key
    elseif is_map and values then
      child = values
      path[depth] = escaped and unescape(s, i + 1, j - 2) or sub(s, i + 1, j - 2)
    end
    i = ws(s, j)
    if byte(s, i) ~= 58 then malformed(i, "expected ':'") end
    i = ws(s, value(s, ws(s, i + 1), child, depth, path))
    local c = byte(s, i)
    if c == 44 then
      i = ws(s, i + 1)
    elseif c == 125 then
      return i + 1
    else
      malformed(i, "expected ',' or '}'")
    end
  end
end

local function array(s, i, spec, depth, path)
  if depth > MAX_DEPTH then too_deep(i) end
  local element = spec
  if spec and not spec.fields then element = spec.entry end
  i = ws(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end
  local n = 0
  while true do
    if element then path[depth] = n end
    i = ws(s, value(s, i, element, depth, path))
    local c = byte(s, i)
    if c == 44 then
      i, n = ws(s, i + 1), n + 1
    elseif c == 93 then
      return i + 1
    else
      malformed(i, "expected ',' or ']'")
    end
  end
end

value = function(s, i, spec, depth, path)
  local c = byte(s, i)
  if c == 123 then return object(s, i, spec, depth + 1, path) end
  if c == 91 then return array(s, i, spec, depth + 1, path) end
  if c == 34 then return (str(s, i)) end
  if c == 116 then
    if sub(s, i, i + 3) ~= "true" then malformed(i, "invalid literal") end
    return i + 4
  end
  if c == 102 then
    if sub(s, i, i + 4) ~= "false" then malformed(i, "invalid literal") end
    return i + 5
  end
  if c == 110 then
    if sub(s, i, i + 3) ~= "null" then malformed(i, "invalid literal") end
    return i + 4
  end
  if c == 45 or (c and c >= 48 and c <= 57) then return num(s, i) end
  if c == nil then malformed(i, "unexpected end of input") end
  malformed(i, "unexpected character")
end

-- Raises a check error table for a bad body; returns nothing when the body may pass.
local function check(s, root)
  local i = ws(s, 1)
  if i > #s then return end -- empty (whitespace only): nothing to check
  i = ws(s, value(s, i, root, 0, {}))
  if i <= #s then malformed(i, "unexpected data after the JSON value") end
end

-- --- answers ---------------------------------------------------------------------------------

-- A JSON string literal; invalid UTF-8 becomes U+FFFD so the answer stays valid JSON.
local function quote(s)
  local out, n, i, len = {'"'}, 1, 1, #s
  while i <= len do
    local c, size = byte(s, i), 1
    local piece
    if c == 34 then piece = '\\"'
    elseif c == 92 then piece = "\\\\"
    elseif c < 32 or c == 127 then piece = format("\\u%04x", c)
    elseif c < 128 then
      local _, e = find(s, '^[^%z\1-\31"\\\127-\255]+', i)
      piece, size = sub(s, i, e), e - i + 1
    else
      local lo, hi = 0x80, 0xBF
      if c >= 0xC2 and c <= 0xDF then size = 2
      elseif c >= 0xE0 and c <= 0xEF then
        size = 3
        if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
      elseif c >= 0xF0 and c <= 0xF4 then
        size = 4
        if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
      else size = 0 end
      local ok = size > 0 and i + size - 1 <= len
      if ok then
        local c2 = byte(s, i + 1)
        ok = c2 >= lo and c2 <= hi
        for k = i + 2, i + size - 1 do
          local ck = byte(s, k)
          if ck < 0x80 or ck > 0xBF then ok = false end
        end
      end
      if ok then piece = sub(s, i, i + size - 1) else piece, size = "\\ufffd", 1 end
    end
    n = n + 1; out[n] = piece
    i = i + size
  end
  n = n + 1; out[n] = '"'
  return concat(out)
end

local function clip(s)
  if #s > 200 then return sub(s, 1, 200) .. "..." end
  return s
end

local function error_info(reason, metadata)
  local items, n = {}, 0
  for _, kv in ipairs(metadata) do
    n = n + 1; items[n] = quote(kv[1]) .. ":" .. quote(kv[2])
  end
  return '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":' .. quote(reason)
    .. ',"domain":' .. quote(ERROR_DOMAIN) .. ',"metadata":{' .. concat(items, ",") .. "}}"
end

local function status_json(code, message, details)
  return '{"code":' .. code .. ',"message":' .. quote(message) .. ',"details":[' .. concat(details, ",") .. "]}"
end

local function position(s, pos)
  local line, start, k = 1, 1, 1
  while true do
    local nl = find(s, "\n", k, true)
    if not nl or nl >= pos then break end
    line, start, k = line + 1, nl + 1, nl + 1
  end
  return line, pos - start + 1
end

local function answer(failure, s)
  if failure.reason == "UNKNOWN_FIELD" then
    local field = clip(failure.field)
    local description = "unknown field (" .. failure.type .. " has no such field)"
    return status_json(3, "unknown field " .. quote(field) .. " in the request body (" .. failure.type .. " has no such field)", {
      error_info("UNKNOWN_FIELD", {{"field", field}}),
      '{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":[{"field":' .. quote(field)
        .. ',"description":' .. quote(description) .. ',"reason":"UNKNOWN_FIELD"}]}',
    })
  end
  local line, column = position(s, failure.pos)
  local offset = tostring(failure.pos - 1)
  local what = failure.pos > #s and "unexpected end of input" or failure.what
  return status_json(3, format("malformed JSON at line %d, column %d (byte %s): %s", line, column, offset, what), {
    error_info(failure.reason, {{"line", tostring(line)}, {"column", tostring(column)}, {"offset", offset}}),
  })
end

local function respond(handle, status, body)
  handle:streamInfo():dynamicMetadata():set(METADATA_NAMESPACE, METADATA_KEY, true)
  handle:respond({[":status"] = status, ["content-type"] = "application/json"}, body)
end

-- --- which requests --------------------------------------------------------------------------

local function percent_decode(h) return char(tonumber(h, 16)) end

local function route_for(method, path)
  for _, route in ipairs(ROUTES) do
    if route.method == method and find(path, route.pattern) then return route end
  end
  return nil
end

-- The route of `path` (query already dropped) in any reading the transcoder might give it: it
-- splits a registered ':verb' off after the last '/', then ignores a trailing '/'; an
-- unregistered verb stays in the last segment. Both readings are tried, on the path as sent and
-- percent-decoded, so the check matches (at least) every request the transcoder transcodes.
local function match(method, path)
  local route = route_for(method, (gsub(path, "/+$", "")))
  if route then return route end
  local colon = find(path, ":[^/:]*$")
  if colon then
    return route_for(method, gsub(sub(path, 1, colon - 1), "/+$", "") .. sub(path, colon))
  end
  return nil
end

local function body_route(headers)
  local content_type = headers:get("content-type")
  if content_type and (content_type == "application/grpc" or sub(content_type, 1, 17) == "application/grpc+") then
    return nil -- native gRPC: the transcoder passes it through (Envoy's own test)
  end
  local method, path = headers:get(":method"), headers:get(":path")
  if not method or not path then return nil end
  local q = find(path, "?", 1, true)
  if q then path = sub(path, 1, q - 1) end
  path = gsub(path, "//+", "/")
  local route = match(method, path)
  if route or not find(path, "%", 1, true) then return route end
  return match(method, (gsub(path, "%%(%x%x)", percent_decode)))
end

-- Envoy logs a Lua error and lets the request continue: every step that could raise runs under
-- pcall, and an error of this script is a 500, never a pass.
local function fail(handle, err)
  handle:logErr("strict JSON check failed: " .. tostring(err))
  respond(handle, "500", status_json(13, "the edge could not check the request body", {
    error_info("STRICT_JSON_FAILED", {}),
  }))
end

function envoy_on_request(handle)
  local found, route = pcall(body_route, handle:headers())
  if not found then return fail(handle, route) end
  if not route then return end
  local body = handle:body()
  if not body then return end
  local size = body:length()
  if size == 0 then return end
  local ok, failure = pcall(function() return check(body:getBytes(0, size), route.body) end)
  if ok then return end
  if type(failure) ~= "table" then return fail(handle, failure) end
  local built, text = pcall(answer, failure, body:getBytes(0, size))
  if not built then return fail(handle, text) end
  respond(handle, "400", text)
end
"""


def render_lua(schema: Schema) -> str:
    """The Lua filter's source: the generated schema, then the scanner and the handler."""
    header = "\n".join(
        [
            "-- utimesh edge: strict JSON request bodies (unknown fields are a 400 naming them).",
            "-- Generated by gateway/strict_json.py from the consult descriptor set. Do not edit.",
            f"local MAX_DEPTH = {MAX_DEPTH}",
            f"local ERROR_DOMAIN = {lua_string(ERROR_DOMAIN)}",
            f"local METADATA_NAMESPACE = {lua_string(METADATA_NAMESPACE)}",
            f"local METADATA_KEY = {lua_string(METADATA_KEY)}",
        ]
    )
    return f"{header}\n{_schema_lua(schema)}\n{_RUNTIME.lstrip()}"


def generate(fds: descriptor_pb2.FileDescriptorSet, services: Iterable[str]) -> str:
    """The Lua source for `services` of the descriptor set `fds`."""
    return render_lua(build_schema(fds, services))


__all__ = [
    "ERROR_DOMAIN",
    "MAX_DEPTH",
    "METADATA_KEY",
    "METADATA_NAMESPACE",
    "BodyRoute",
    "MapOf",
    "Message",
    "Schema",
    "SchemaError",
    "build_schema",
    "generate",
    "json_name",
    "lua_pattern",
    "lua_string",
    "render_lua",
]
