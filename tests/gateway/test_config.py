"""The generated Envoy bootstrap: Envoy itself accepts every combination we ship (validate
mode, offline), and the parts that carry the security design are where they must be."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2  # type: ignore[import-untyped]
from pydantic import ValidationError

from gateway import EdgeSettings, JwtSettings, UpstreamTls, dev_settings, prepare, strict_json
from gateway.config import ACCESS_LOG_FORMAT, Bootstrap, bootstrap_dict, build_bootstrap
from gateway.descriptor import (
    build_descriptor_set,
    descriptor_set_from_modules,
    load_descriptor_set,
)
from gateway.envoy import EnvoyError, validate
from gateway.policy import ADMIN_ROUTES, METHOD_ROLES, grpc_path
from gateway.settings import EDGE_SERVICES
from tests.gateway.harness import make_pki
from utimesh.consult.v1 import consult_pb2

SPIFFE_CONSULT = "spiffe://utimesh.local/ns/utimesh/sa/consult"


def _find(node: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a nested dict/list."""
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                found.append(v)
            found += _find(v, key)
    elif isinstance(node, list):
        for item in node:
            found += _find(item, key)
    return found


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["staticResources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filterChains"][0]["filters"][0]["typedConfig"]
    return hcm


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["staticResources"]["clusters"]}


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The consult descriptor set: generating the bootstrap reads it (the strict-JSON script)."""
    return build_descriptor_set(tmp_path_factory.mktemp("descriptor"))


def _settings(tmp_path: Path, **overrides: Any) -> EdgeSettings:
    return dev_settings(tmp_path / "state", **overrides)


def _remote_jwks(tmp_path: Path, url: str, **overrides: Any) -> EdgeSettings:
    ca = make_pki(tmp_path / "idp", "spiffe://idp.test/x").ca
    jwt = JwtSettings.model_validate(
        {"issuer": "https://idp.utimesh.test", "jwks_url": url, "jwks_ca_file": ca}
    )
    return EdgeSettings(jwt=jwt, state_dir=tmp_path / "state", **overrides)


def _tls(tmp_path: Path, *, client_cert: bool) -> EdgeSettings:
    pki = make_pki(tmp_path / "pki", "spiffe://utimesh.local/ns/utimesh/sa/edge")
    tls = UpstreamTls(
        ca_file=pki.ca,
        cert_file=pki.cert if client_cert else None,
        key_file=pki.key if client_cert else None,
        sni="consult.utimesh.svc",
        spiffe_id=SPIFFE_CONSULT,
    )
    return _settings(tmp_path, upstream_tls=tls)


CASES = {
    "plain-upstream-local-jwks": lambda tmp: _settings(tmp),
    "mtls-upstream-spiffe": lambda tmp: _tls(tmp, client_cert=True),
    "tls-upstream-no-client-cert": lambda tmp: _tls(tmp, client_cert=False),
    "remote-jwks-https": lambda tmp: _remote_jwks(
        tmp, "https://idp.utimesh.test/.well-known/jwks.json"
    ),
    "remote-jwks-http-port": lambda tmp: _remote_jwks(tmp, "http://127.0.0.1:8999/jwks"),
    "cors-and-small-limits": lambda tmp: _settings(
        tmp,
        cors_allowed_origins=["https://a.utimesh.test", "http://localhost:5173"],
        rate_limit_tokens=1,
        rate_limit_fill_interval_seconds=0.5,
        max_request_bytes=4096,
        unary_timeout_seconds=5,
        stream_timeout_seconds=7,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_envoy_accepts_the_generated_config(tmp_path: Path, case: str) -> None:
    settings = CASES[case](tmp_path)
    prepared = prepare(settings)
    validate(prepared.config)  # raises EnvoyError with Envoy's message when rejected


def test_envoy_rejects_a_broken_config(tmp_path: Path, descriptor: Path) -> None:
    """The validator is not a rubber stamp: a descriptor set gone since generation fails."""
    settings = _settings(tmp_path)
    doomed = tmp_path / "no-such-descriptor.pb"
    shutil.copyfile(descriptor, doomed)
    data = bootstrap_dict(settings, doomed)
    doomed.unlink()
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(EnvoyError, match=r"no-such-descriptor\.pb"):
        validate(config)


def test_generating_without_the_descriptor_set_fails(tmp_path: Path) -> None:
    """The strict-JSON script is generated from the descriptor set: no set, no config (rather
    than an edge that silently drops unknown fields)."""
    with pytest.raises(FileNotFoundError):
        bootstrap_dict(_settings(tmp_path), tmp_path / "missing.pb")


def test_yaml_reads_back_to_the_same_typed_bootstrap(tmp_path: Path) -> None:
    settings = _tls(tmp_path, client_cert=True)
    prepared = prepare(settings)
    # Reading Any-packed configs back needs their modules imported: gateway.config does that.
    loaded = Bootstrap.from_dict(yaml.safe_load(prepared.config.read_text()))
    assert loaded == build_bootstrap(settings, prepared.descriptor)


def test_filter_order_is_the_design(tmp_path: Path, descriptor: Path) -> None:
    names = [
        f["name"] for f in _hcm(bootstrap_dict(_settings(tmp_path), descriptor))["httpFilters"]
    ]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.cors",
        "envoy.filters.http.health_check",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.buffer",
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]


def test_strict_json_script_is_generated_and_its_answers_pass_through(
    tmp_path: Path, descriptor: Path
) -> None:
    hcm = _hcm(bootstrap_dict(_settings(tmp_path), descriptor))
    lua = next(f for f in hcm["httpFilters"] if f["name"] == "envoy.filters.http.lua")
    source = lua["typedConfig"]["defaultSourceCode"]["inlineString"]
    assert source == strict_json.generate(load_descriptor_set(descriptor), list(EDGE_SERVICES))
    for pattern in ("^/v1/consultations$", "^/v1/consultations:stream$"):
        assert f'method = "POST", pattern = "{pattern}"' in source
    # The script knows the transcoder's routes only if these stay as they are: the same
    # services, and no automatic POST /<service>/<method> mapping besides the HTTP rules.
    transcoder = next(
        f["typedConfig"]
        for f in hcm["httpFilters"]
        if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )
    assert transcoder["services"] == list(EDGE_SERVICES)
    assert not transcoder.get("autoMapping")
    assert transcoder["protoDescriptor"] == str(descriptor)
    # The script's complete google.rpc.Status bodies are not re-wrapped by the 400 mapper.
    first = hcm["localReplyConfig"]["mappers"][0]
    matcher = first["filter"]["metadataFilter"]["matcher"]
    assert matcher["filter"] == strict_json.METADATA_NAMESPACE
    assert matcher["path"] == [{"key": strict_json.METADATA_KEY}]
    assert matcher["value"] == {"boolMatch": True}
    assert first["bodyFormatOverride"]["textFormatSource"]["inlineString"] == "%LOCAL_REPLY_BODY%"


def test_rbac_allows_exactly_the_role_table(tmp_path: Path, descriptor: Path) -> None:
    hcm = _hcm(bootstrap_dict(_settings(tmp_path), descriptor))
    rbac = next(f for f in hcm["httpFilters"] if f["name"] == "envoy.filters.http.rbac")
    policies = rbac["typedConfig"]["rules"]["policies"]
    assert rbac["typedConfig"]["rules"].get("action", "ALLOW") == "ALLOW"
    allowed: dict[str, set[str]] = {}
    for policy in policies.values():
        paths = [p["urlPath"]["path"]["exact"] for p in policy["permissions"]]
        roles = {
            p["sourcedMetadata"]["metadataMatcher"]["value"]["listMatch"]["oneOf"]["stringMatch"][
                "exact"
            ]
            for p in policy["principals"]
        }
        for path in paths:
            allowed.setdefault(path, set()).update(roles)
    expected = {grpc_path(m): set(roles) for m, roles in METHOD_ROLES.items()}
    expected |= {path: {"operator"} for path in ADMIN_ROUTES}
    assert allowed == expected
    # Every RPC the contract has is covered; SignOff is allowed ahead of its existence.
    rpcs = set(consult_pb2.DESCRIPTOR.services_by_name["ConsultationService"].methods_by_name)
    assert rpcs <= set(METHOD_ROLES)
    assert METHOD_ROLES["SignOffConsultation"] == ("prescriber",)
    assert all("operator" not in roles for roles in METHOD_ROLES.values())


def test_upstream_is_http2_health_checked_and_tls_pins_the_spiffe_id(
    tmp_path: Path, descriptor: Path
) -> None:
    config = bootstrap_dict(_tls(tmp_path, client_cert=True), descriptor)
    consult = _clusters(config)["consult"]
    options = consult["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2ProtocolOptions" in options["explicitHttpConfig"]
    grpc_check = consult["healthChecks"][0]["grpcHealthCheck"]
    assert grpc_check["serviceName"] == "utimesh.consult.v1.ConsultationService"
    tls = consult["transportSocket"]["typedConfig"]
    assert tls["sni"] == "consult.utimesh.svc"
    common = tls["commonTlsContext"]
    assert common["tlsCertificates"], "a client certificate is presented (mTLS)"
    assert common["tlsParams"]["tlsMaximumProtocolVersion"] == "TLSv1_3"
    assert common["validationContext"]["matchTypedSubjectAltNames"] == [
        {"sanType": "URI", "matcher": {"exact": SPIFFE_CONSULT}}
    ]


def test_plain_upstream_has_no_transport_socket(tmp_path: Path, descriptor: Path) -> None:
    consult = _clusters(bootstrap_dict(_settings(tmp_path), descriptor))["consult"]
    assert "transportSocket" not in consult


def test_remote_jwks_gets_its_own_tls_cluster(tmp_path: Path, descriptor: Path) -> None:
    settings = _remote_jwks(tmp_path, "https://idp.utimesh.test/.well-known/jwks.json")
    config = bootstrap_dict(settings, descriptor)
    jwks = _clusters(config)["jwks"]
    assert jwks["transportSocket"]["typedConfig"]["sni"] == "idp.utimesh.test"
    provider = _find(config, "providers")[0]["utimesh"]
    assert provider["remoteJwks"]["httpUri"]["cluster"] == "jwks"
    assert "localJwks" not in provider


def test_listener_does_not_share_its_port(tmp_path: Path, descriptor: Path) -> None:
    listener = bootstrap_dict(_settings(tmp_path), descriptor)["staticResources"]["listeners"][0]
    assert listener["enableReusePort"] is False


def test_routes_carry_timeouts_and_the_service_deadline(tmp_path: Path, descriptor: Path) -> None:
    settings = _settings(tmp_path, unary_timeout_seconds=90, stream_timeout_seconds=180)
    routes = _hcm(bootstrap_dict(settings, descriptor))["routeConfig"]["virtualHosts"][0]["routes"]
    by_name = {r["name"]: r for r in routes}
    assert by_name["consult.unary"]["route"]["timeout"] == "90s"
    assert by_name["consult.stream"]["route"]["timeout"] == "180s"
    deadline = by_name["consult.unary"]["requestHeadersToAdd"][0]["header"]
    assert deadline == {"key": "grpc-timeout", "value": "89000m"}


def test_access_log_never_logs_bodies_queries_or_tokens() -> None:
    text = " ".join(ACCESS_LOG_FORMAT.values())
    for forbidden in ("BODY", "AUTHORIZATION", "X-ENVOY-ORIGINAL-PATH", "QUERY", "%REQ(:PATH)%"):
        assert forbidden not in text.upper()
    assert ACCESS_LOG_FORMAT["path"] == "%PATH(NQ:PATH)%"
    assert {"method", "path", "status", "duration_ms", "upstream_cluster", "request_id"} <= set(
        ACCESS_LOG_FORMAT
    )


def test_descriptor_from_generated_code_carries_the_http_rules(tmp_path: Path) -> None:
    """Without protos/ (an installed wheel) the set comes from the generated modules, and Envoy
    accepts a config that uses it."""
    fds = descriptor_set_from_modules()
    names = [f.name for f in fds.file]
    assert names.index("utimesh/clinical/v1/clinical.proto") < names.index(
        "utimesh/consult/v1/consult.proto"
    )
    assert "google/rpc/error_details.proto" in names
    consult = next(f for f in fds.file if f.name == "utimesh/consult/v1/consult.proto")
    methods = consult.service[0].method
    assert methods and all(m.options.HasExtension(annotations_pb2.http) for m in methods)
    descriptor = tmp_path / "from-modules.pb"
    descriptor.write_bytes(fds.SerializeToString())
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap_dict(_settings(tmp_path), descriptor)))
    validate(config)
    assert build_descriptor_set(tmp_path / "built").stat().st_size > descriptor.stat().st_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"jwt": {"jwks_file": "/x.json", "jwks_url": "https://idp/jwks"}},
            "exactly one of jwks_file",
        ),
        ({"jwt": {}}, "exactly one of jwks_file"),
        (
            {
                "jwt": {"jwks_file": "/x.json"},
                "upstream_tls": {"ca_file": "/ca", "cert_file": "/c"},
            },
            "cert_file and key_file",
        ),
        (
            {"jwt": {"jwks_file": "/x.json"}, "upstream_tls": {"ca_file": "/ca", "spiffe_id": "x"}},
            "spiffe://",
        ),
        ({"jwt": {"jwks_file": "/x.json"}, "cors_allowed_origins": ["*"]}, "exact"),
        ({"jwt": {"jwks_file": "/x.json"}, "listen_port": 9901}, "must differ"),
    ],
    ids=[
        "two-key-sources",
        "no-key-source",
        "cert-without-key",
        "bad-spiffe",
        "cors-star",
        "ports",
    ],
)
def test_bad_settings_fail_fast(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EdgeSettings(**overrides)


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UTIMESH_EDGE_LISTEN_PORT", "18080")
    monkeypatch.setenv("UTIMESH_EDGE_JWT__JWKS_URL", "https://idp.utimesh.test/jwks")
    monkeypatch.setenv("UTIMESH_EDGE_JWT__AUDIENCE", "edge-prod")
    monkeypatch.setenv("UTIMESH_EDGE_UPSTREAM_TLS__CA_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("UTIMESH_EDGE_CORS_ALLOWED_ORIGINS", '["https://app.utimesh.test"]')
    settings = EdgeSettings()  # type: ignore[call-arg]
    assert settings.listen_port == 18080
    assert settings.jwt.audience == "edge-prod"
    assert str(settings.jwt.jwks_url) == "https://idp.utimesh.test/jwks"
    assert (
        settings.upstream_tls is not None and settings.upstream_tls.ca_file == tmp_path / "ca.pem"
    )
    assert settings.cors_allowed_origins == ["https://app.utimesh.test"]
