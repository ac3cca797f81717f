"""Test harness for the edge: free ports, a real Envoy in front of a consult port, dev tokens,
proto-JSON intakes and throwaway certificates (made at run time, never committed)."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import descriptor_pb2
from google.protobuf.json_format import MessageToDict

from gateway import EdgeSettings, dev_settings, prepare
from gateway.config import STRICT_JSON_FILTER, bootstrap_dict
from gateway.descriptor import _protoc_includes, load_descriptor_set
from gateway.envoy import EnvoyProcess, running
from gateway.jwt_dev import DevIssuer, ensure_dev_issuer
from tests.factories import patient
from utimesh.codec.clinical import intake_to_proto
from utimesh.rules import parse_intake

ALLOWED_ORIGIN = "https://app.utimesh.test"


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free right now (all held open until all are chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def intake_json(*, camel_case: bool = False, **overrides: Any) -> dict[str, Any]:
    """A treatable intake in the REST API's JSON: proto field names, or the lowerCamelCase
    json names (which the transcoder accepts as well)."""
    proto = intake_to_proto(parse_intake(patient(**overrides)))
    return MessageToDict(proto, preserving_proto_field_name=not camel_case)


@dataclass
class Edge:
    """A running edge Envoy and what a test needs to talk to it."""

    settings: EdgeSettings
    envoy: EnvoyProcess
    issuer: DevIssuer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.listen_port}"

    @property
    def access_log(self) -> Path:
        return Path(self.settings.access_log_path)

    def bearer(self, *roles: str, sub: str = "test-user", **kwargs: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.issuer.mint(sub, roles, **kwargs)}"}


@contextlib.asynccontextmanager
async def running_edge(state_dir: Path, consult_port: int, **overrides: Any) -> AsyncIterator[Edge]:
    """Envoy with the generated config in front of `consult_port`; always stopped on exit."""
    listen_port, admin_port = free_ports(2)
    settings = dev_settings(
        state_dir,
        listen_port=listen_port,
        admin_port=admin_port,
        consult_port=consult_port,
        access_log_path=str(state_dir / "access.log"),
        cors_allowed_origins=[ALLOWED_ORIGIN],
        **overrides,
    )
    prepared = prepare(settings)
    async with running(
        prepared.config,
        admin_host=settings.admin_host,
        admin_port=admin_port,
        base_id=admin_port,
        log_path=state_dir / "envoy.log",
    ) as envoy:
        yield Edge(settings, envoy, ensure_dev_issuer(state_dir))


def _probe_bootstrap(real: dict[str, Any], script: str | None) -> dict[str, Any]:
    """The edge's bootstrap cut down to body limit + strict-JSON check + local replies: what
    the check lets pass gets a direct 200 "passed" (no token, no transcoder, no upstream)."""
    hcm = real["staticResources"]["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"]
    kept = {"envoy.filters.http.buffer", STRICT_JSON_FILTER, "envoy.filters.http.router"}
    hcm["httpFilters"] = [f for f in hcm["httpFilters"] if f["name"] in kept]
    if script is not None:
        lua = next(f for f in hcm["httpFilters"] if f["name"] == STRICT_JSON_FILTER)
        lua["typedConfig"]["defaultSourceCode"] = {"inlineString": script}
    hcm["routeConfig"] = {
        "name": "probe",
        "virtualHosts": [
            {
                "name": "probe",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "directResponse": {"status": 200, "body": {"inlineString": PASSED}},
                    }
                ],
            }
        ],
    }
    return real


PASSED = "passed"
"""The probe's answer to a body the strict-JSON check let through."""


@dataclass
class Probe:
    """A running strict-JSON probe (see `running_strict_json_probe`)."""

    url: str
    envoy: EnvoyProcess


@contextlib.asynccontextmanager
async def running_strict_json_probe(
    state_dir: Path, *, script: str | None = None
) -> AsyncIterator[Probe]:
    """The edge's own strict-JSON filter (or `script` in its place) and local-reply mapping in a
    real Envoy, with the rest of the edge cut away; always stopped on exit."""
    listen_port, admin_port = free_ports(2)
    settings = dev_settings(
        state_dir, listen_port=listen_port, admin_port=admin_port, access_log_path="/dev/null"
    )
    prepared = prepare(settings)
    config = state_dir / "probe.yaml"
    real = bootstrap_dict(settings, prepared.descriptor)
    config.write_text(yaml.safe_dump(_probe_bootstrap(real, script), sort_keys=False))
    async with running(
        config,
        admin_host=settings.admin_host,
        admin_port=admin_port,
        base_id=admin_port,
        log_path=state_dir / "probe.log",
    ) as envoy:
        yield Probe(f"http://127.0.0.1:{listen_port}", envoy)


def compile_proto(directory: Path, name: str, text: str) -> descriptor_pb2.FileDescriptorSet:
    """The descriptor set (imports included) of one .proto source, compiled with protoc."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    out = directory / "set.pb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *[f"-I{path}" for path in _protoc_includes(directory)],
            "--include_imports",
            f"--descriptor_set_out={out}",
            name,
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return load_descriptor_set(out)


THINGS_PROTO = """
syntax = "proto3";
package test.strict.v1;

import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/any.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";

service Things {
  rpc CreateThing(CreateThingRequest) returns (Thing) {
    option (google.api.http) = {
      post: "/v1/{parent=shelves/*}/things"
      body: "thing"
      additional_bindings { put: "/v1/things" body: "*" }
    };
  }
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/{name=things/**}"};
  }
  rpc Upload(google.api.HttpBody) returns (Thing) {
    option (google.api.http) = {post: "/v1/uploads" body: "*"};
  }
  rpc Touch(TouchRequest) returns (Thing) {
    option (google.api.http) = {
      custom: {kind: "LOCK" path: "/v1/{name=things/*}:touch"}
      body: "*"
    };
  }
}

message CreateThingRequest {
  string parent = 1;
  Thing thing = 2;
}

message GetThingRequest {
  string name = 1;
}

message TouchRequest {
  string name = 1;
  google.protobuf.Empty nothing = 2;
}

message Thing {
  message Part {
    int32 count = 1;
  }
  string display_name = 1;
  map<string, Part> parts = 2;
  map<string, string> labels = 3;
  google.protobuf.Struct extra = 4;
  google.protobuf.Timestamp when = 5;
  repeated Part history = 6;
  Thing parent_thing = 7;
  google.protobuf.Any payload = 8;
  string odd = 9 [json_name = "Odd-Name"];
  oneof choice {
    Part main = 10;
    string note = 11;
  }
}
"""
"""A test API with what the consult API lacks: maps, well-known types, a body field, extra
bindings, a custom verb, a raw HttpBody, recursion, a custom json_name, a oneof."""
THINGS_SERVICE = "test.strict.v1.Things"


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- throwaway PKI -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class ThrowawayCa:
    """A throwaway CA that issues leaf certificates with SPIFFE URI SANs (PEM files)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC)
        self._key = _key()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "utimesh test CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, spiffe_id: str, dns: Sequence[str] = ()) -> Pki:
        key = _key()
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(d) for d in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pki = Pki(self.ca, self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pki.key.write_bytes(_pem_key(key))
        pki.key.chmod(0o600)
        return pki


def make_pki(directory: Path, spiffe_id: str, dns: Sequence[str] = ()) -> Pki:
    """A CA and one leaf certificate with a SPIFFE URI SAN, as PEM files in `directory`."""
    return ThrowawayCa(directory).issue("edge", spiffe_id, dns)
