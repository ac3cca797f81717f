"""Generate the edge Envoy bootstrap (typed, with envoy-data-plane) from EdgeSettings.

The HTTP filter chain, in order (the order is the design):

1. header_mutation  strips client-sent identity headers (x-utimesh-sub, x-utimesh-roles) so only
                    jwt_authn can set them.
2. cors             answers preflights for allowed origins before anything asks for a token.
3. health_check     answers GET /healthz from Envoy's active gRPC health checks of consult
                    (200 when consult is SERVING, 503 otherwise); no token needed.
4. local_ratelimit  a token bucket per client IP (429), before any expensive work.
5. jwt_authn        RS256 tokens of one issuer and audience, from the Authorization header
                    only (401 missing/invalid/expired; 403 wrong audience). The verified
                    payload goes to dynamic metadata (payload_in_metadata) and claims to
                    headers for the service: `x-utimesh-sub: <sub>` and `x-utimesh-roles:
                    <base64 of the JSON array>` (Envoy encodes list claims that way).
6. buffer           caps the request body (413).
7. lua (strict JSON) rejects unknown and malformed JSON body fields with a 400 naming them
                    (gateway.strict_json; the script is generated from the descriptor set). The
                    transcoder would silently drop unknown fields (envoyproxy/envoy#46623).
8. grpc_json_transcoder  REST/JSON -> gRPC from the google.api.http annotations.
9. rbac             per gRPC method, on the roles claim in jwt_authn's dynamic metadata (403).
10. router          HTTP/2 to consult, with a route timeout and a grpc-timeout for the service.

RBAC runs after the transcoder on purpose: there it sees the gRPC path
(/utimesh.consult.v1.ConsultationService/Method), so one table (gateway.policy) governs REST and
native gRPC callers alike, without regexes over URL templates. It matches the roles claim in
*dynamic metadata* written by jwt_authn, not a header: metadata cannot be forged by a client.
"""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path
from typing import Any as AnyJson
from urllib.parse import urlsplit

import betterproto2
import yaml
from pydantic.warnings import PydanticDeprecatedSince212

from gateway.descriptor import load_descriptor_set
from gateway.policy import ADMIN_ROLES, ADMIN_ROUTES, HEALTH_PATH, METHOD_ROLES, grpc_path
from gateway.settings import (
    CONSULT_SERVICE,
    EDGE_SERVICES,
    OPERATIONS_SERVICE,
    EdgeSettings,
    UpstreamTls,
)
from gateway.strict_json import METADATA_KEY, METADATA_NAMESPACE
from gateway.strict_json import generate as generate_strict_json

with warnings.catch_warnings():
    # envoy-data-plane 2.2 declares its oneof checks as classmethod after-validators, which
    # pydantic >= 2.12 reports as deprecated when each class is created: a dependency's noise,
    # silenced here (only while importing) so that warnings stay errors in our tests.
    warnings.simplefilter("ignore", PydanticDeprecatedSince212)
    from envoy_data_plane.envoy.config.accesslog.v3 import (
        AccessLog,
        AccessLogFilter,
        ComparisonFilter,
        ComparisonFilterOp,
        MetadataFilter,
        StatusCodeFilter,
    )
    from envoy_data_plane.envoy.config.bootstrap.v3 import (
        Admin,
        Bootstrap,
        BootstrapStaticResources,
    )
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
        HeaderMutation as HeaderMutationRule,
    )
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        DataSource,
        HeaderValue,
        HeaderValueOption,
        HeaderValueOptionHeaderAppendAction,
        HealthCheck,
        HealthCheckGrpcHealthCheck,
        Http1ProtocolOptions,
        Http2ProtocolOptions,
        HttpProtocolOptions,
        HttpProtocolOptionsHeadersWithUnderscoresAction,
        HttpUri,
        RuntimeFractionalPercent,
        RuntimeUInt32,
        SocketAddress,
        SubstitutionFormatString,
        TransportSocket,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
    from envoy_data_plane.envoy.config.rbac.v3 import (
        Permission,
        Policy,
        Principal,
        RbacAction,
        SourcedMetadata,
    )
    from envoy_data_plane.envoy.config.rbac.v3 import Rbac as RbacRules
    from envoy_data_plane.envoy.config.route.v3 import (
        DirectResponseAction,
        HeaderMatcher,
        RateLimit,
        RateLimitAction,
        RateLimitActionRemoteAddress,
        Route,
        RouteAction,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.file.v3 import FileAccessLog
    from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
        LocalRateLimitDescriptor,
        RateLimitDescriptorEntry,
    )
    from envoy_data_plane.envoy.extensions.filters.http.buffer.v3 import Buffer
    from envoy_data_plane.envoy.extensions.filters.http.cors.v3 import Cors, CorsPolicy
    from envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3 import (
        GrpcJsonTranscoder,
        GrpcJsonTranscoderPrintOptions,
        GrpcJsonTranscoderRequestValidationOptions,
    )
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
        HeaderMutation,
        Mutations,
    )
    from envoy_data_plane.envoy.extensions.filters.http.health_check.v3 import (
        HealthCheck as HealthCheckFilter,
    )
    from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
        JwtAuthentication,
        JwtCacheConfig,
        JwtClaimToHeader,
        JwtHeader,
        JwtProvider,
        JwtRequirement,
        RemoteJwks,
        RequirementRule,
    )
    from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
    from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua
    from envoy_data_plane.envoy.extensions.filters.http.rbac.v3 import Rbac
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerCodecType,
        HttpConnectionManagerPathWithEscapedSlashesAction,
        HttpFilter,
        LocalReplyConfig,
        ResponseMapper,
    )
    from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
        DownstreamConnectionsConfig,
    )
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
        CertificateValidationContext,
        CommonTlsContext,
        SubjectAltNameMatcher,
        SubjectAltNameMatcherSanType,
        TlsCertificate,
        TlsParameters,
        TlsParametersTlsProtocol,
        UpstreamTlsContext,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions as UpstreamHttpProtocolOptions,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import (
        ListMatcher,
        MetadataMatcher,
        MetadataMatcherPathSegment,
        PathMatcher,
        StringMatcher,
        ValueMatcher,
    )
    from envoy_data_plane.envoy.type.v3 import FractionalPercent, Percent, TokenBucket
    from envoy_data_plane.google.protobuf import Any, Struct


CONSULT_CLUSTER = "consult"
ADMIN_CLUSTER = "edge_admin"
UNTRANSCODED_CLUSTER = "untranscoded"
"""Has no endpoints: a REST path the transcoder did not map must never reach a service."""
JWKS_CLUSTER = "jwks"
JWT_PROVIDER = "utimesh"
JWT_FILTER = "envoy.filters.http.jwt_authn"
STRICT_JSON_FILTER = "envoy.filters.http.lua"
JWT_PAYLOAD_KEY = "jwt_payload"
SUB_HEADER = "x-utimesh-sub"
ROLES_HEADER = "x-utimesh-roles"
DEADLINE_MARGIN_SECONDS = 1.0
"""The service's gRPC deadline is the route timeout less this, so it answers (perhaps degraded)
before Envoy gives up on it."""

# Local replies (Envoy's own 4xx/5xx) carry the same JSON shape as transcoded gRPC errors:
# {"code": <google.rpc.Code>, "message": ...}. HTTP status -> gRPC code.
_LOCAL_REPLY_CODES = {
    400: 3,  # INVALID_ARGUMENT (e.g. malformed JSON)
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    413: 8,  # RESOURCE_EXHAUSTED
    429: 8,  # RESOURCE_EXHAUSTED
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}

ACCESS_LOG_FORMAT: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    # The current :path without its query: after transcoding that is the gRPC method, i.e. the
    # operation without ids; a request refused before transcoding keeps its REST path. Never a
    # query string (it could carry anything), never a body, never a header with a token.
    "path": "%PATH(NQ:PATH)%",
    "route": "%ROUTE_NAME%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
}


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def _address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def _percent_100(key: str) -> RuntimeFractionalPercent:
    return RuntimeFractionalPercent(default_value=FractionalPercent(numerator=100), runtime_key=key)


def _filter(name: str, config: betterproto2.Message) -> HttpFilter:
    return HttpFilter(name=name, typed_config=Any.pack(config))


def _dns_cluster(name: str, host: str, port: int, connect_timeout_s: float) -> Cluster:
    """One endpoint by address or DNS name (a Kubernetes Service name works as well)."""
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=_seconds(connect_timeout_s),
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                LocalityLbEndpoints(
                    lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=_address(host, port)))]
                )
            ],
        ),
    )


def _upstream_tls_socket(tls: UpstreamTls) -> TransportSocket:
    validation = CertificateValidationContext(
        trusted_ca=DataSource(filename=str(tls.ca_file)),
        match_typed_subject_alt_names=(
            [
                SubjectAltNameMatcher(
                    san_type=SubjectAltNameMatcherSanType.URI,
                    matcher=StringMatcher(exact=tls.spiffe_id),
                )
            ]
            if tls.spiffe_id
            else []
        ),
    )
    certificates = (
        [
            TlsCertificate(
                certificate_chain=DataSource(filename=str(tls.cert_file)),
                private_key=DataSource(filename=str(tls.key_file)),
            )
        ]
        if tls.cert_file is not None and tls.key_file is not None
        else []
    )
    context = UpstreamTlsContext(
        sni=tls.sni,
        common_tls_context=CommonTlsContext(
            # Envoy as a TLS client stops at 1.2 by default; services may insist on 1.3.
            tls_params=TlsParameters(
                tls_minimum_protocol_version=TlsParametersTlsProtocol.TLSv1_2,
                tls_maximum_protocol_version=TlsParametersTlsProtocol.TLSv1_3,
            ),
            tls_certificates=certificates,
            validation_context=validation,
            alpn_protocols=["h2"],
        ),
    )
    return TransportSocket(name="envoy.transport_sockets.tls", typed_config=Any.pack(context))


def consult_cluster(settings: EdgeSettings) -> Cluster:
    """HTTP/2 (gRPC) to consult, actively health-checked with grpc.health.v1."""
    cluster = _dns_cluster(
        CONSULT_CLUSTER,
        settings.consult_host,
        settings.consult_port,
        settings.upstream_connect_timeout_seconds,
    )
    # Without explicit HTTP/2 the config validates but every gRPC call fails at run time.
    cluster.typed_extension_protocol_options = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any.pack(
            UpstreamHttpProtocolOptions(
                explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
                    http2_protocol_options=Http2ProtocolOptions()
                )
            )
        )
    }
    cluster.health_checks = [
        HealthCheck(
            timeout=_seconds(1.0),
            interval=_seconds(settings.health_check_interval_seconds),
            # Envoy checks an idle cluster only once a minute by default; /healthz reports this
            # status, so it is kept as fresh while idle as under traffic.
            no_traffic_interval=_seconds(settings.health_check_interval_seconds),
            unhealthy_threshold=2,
            healthy_threshold=1,
            grpc_health_check=HealthCheckGrpcHealthCheck(service_name=CONSULT_SERVICE),
        )
    ]
    if settings.upstream_tls is not None:
        cluster.transport_socket = _upstream_tls_socket(settings.upstream_tls)
    return cluster


def jwks_cluster(settings: EdgeSettings) -> Cluster | None:
    """The identity provider's JWKS host (remote JWKS only), over TLS when https."""
    url = settings.jwt.jwks_url
    if url is None:
        return None
    parts = urlsplit(str(url))
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    cluster = _dns_cluster(JWKS_CLUSTER, host, port, settings.upstream_connect_timeout_seconds)
    if https:
        context = UpstreamTlsContext(
            sni=host,
            common_tls_context=CommonTlsContext(
                validation_context=CertificateValidationContext(
                    trusted_ca=DataSource(filename=str(settings.jwt.jwks_ca_file)),
                    match_typed_subject_alt_names=[
                        SubjectAltNameMatcher(
                            san_type=SubjectAltNameMatcherSanType.DNS,
                            matcher=StringMatcher(exact=host),
                        )
                    ],
                )
            ),
        )
        cluster.transport_socket = TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=Any.pack(context)
        )
    return cluster


def jwt_filter(settings: EdgeSettings) -> JwtAuthentication:
    """One provider; every request needs a valid token (health and CORS preflight come first)."""
    jwt = settings.jwt
    provider = JwtProvider(
        issuer=jwt.issuer,
        audiences=[jwt.audience],
        require_expiration=True,
        clock_skew_seconds=jwt.clock_skew_seconds,
        forward=False,  # the service gets claims, never the bearer token itself
        # Only the Authorization header: Envoy's default also reads ?access_token=, and a token
        # in a URL ends up in logs and browser history.
        from_headers=[JwtHeader(name="authorization", value_prefix="Bearer ")],
        payload_in_metadata=JWT_PAYLOAD_KEY,
        claim_to_headers=[
            JwtClaimToHeader(header_name=SUB_HEADER, claim_name="sub"),
            JwtClaimToHeader(header_name=ROLES_HEADER, claim_name=jwt.roles_claim),
        ],
        jwt_cache_config=JwtCacheConfig(jwt_cache_size=jwt.cache_size),
    )
    if jwt.jwks_file is not None:
        provider.local_jwks = DataSource(filename=str(jwt.jwks_file))
    else:
        provider.remote_jwks = RemoteJwks(
            http_uri=HttpUri(
                uri=str(jwt.jwks_url),
                cluster=JWKS_CLUSTER,
                timeout=_seconds(jwt.jwks_fetch_timeout_seconds),
            ),
            cache_duration=_seconds(jwt.jwks_cache_seconds),
        )
    return JwtAuthentication(
        providers={JWT_PROVIDER: provider},
        rules=[
            RequirementRule(
                match=RouteMatch(prefix="/"),
                requires=JwtRequirement(provider_name=JWT_PROVIDER),
            )
        ],
        bypass_cors_preflight=True,
    )


def _has_role(role: str, roles_claim: str) -> Principal:
    return Principal(
        sourced_metadata=SourcedMetadata(
            metadata_matcher=MetadataMatcher(
                filter=JWT_FILTER,
                path=[
                    MetadataMatcherPathSegment(key=JWT_PAYLOAD_KEY),
                    MetadataMatcherPathSegment(key=roles_claim),
                ],
                value=ValueMatcher(
                    list_match=ListMatcher(
                        one_of=ValueMatcher(string_match=StringMatcher(exact=role))
                    )
                ),
            )
        )
    )


def rbac_filter(settings: EdgeSettings) -> Rbac:
    """ALLOW policies from gateway.policy; everything else is refused with 403."""
    claim = settings.jwt.roles_claim
    policies = {
        f"consult.{method}": Policy(
            permissions=[
                Permission(url_path=PathMatcher(path=StringMatcher(exact=grpc_path(method))))
            ],
            principals=[_has_role(role, claim) for role in roles],
        )
        for method, roles in METHOD_ROLES.items()
    }
    policies["admin"] = Policy(
        permissions=[
            Permission(url_path=PathMatcher(path=StringMatcher(exact=path)))
            for path in ADMIN_ROUTES
        ],
        principals=[_has_role(role, claim) for role in ADMIN_ROLES],
    )
    return Rbac(rules=RbacRules(action=RbacAction.ALLOW, policies=policies))


def local_ratelimit_filter(settings: EdgeSettings) -> LocalRateLimit:
    """A token bucket per client IP: a descriptor with an empty value is a wildcard, so Envoy
    keeps one dynamic bucket per remote address (LRU, `rate_limit_max_clients`)."""
    bucket = TokenBucket(
        max_tokens=settings.rate_limit_tokens,
        tokens_per_fill=settings.rate_limit_tokens,
        fill_interval=_seconds(settings.rate_limit_fill_interval_seconds),
    )
    return LocalRateLimit(
        stat_prefix="edge_rate_limit",
        token_bucket=bucket,
        filter_enabled=_percent_100("edge_rate_limit_enabled"),
        filter_enforced=_percent_100("edge_rate_limit_enforced"),
        rate_limits=[
            RateLimit(actions=[RateLimitAction(remote_address=RateLimitActionRemoteAddress())])
        ],
        descriptors=[
            LocalRateLimitDescriptor(
                entries=[RateLimitDescriptorEntry(key="remote_address")], token_bucket=bucket
            )
        ],
        max_dynamic_descriptors=settings.rate_limit_max_clients,
        always_consume_default_token_bucket=False,
        response_headers_to_add=[
            HeaderValueOption(
                header=HeaderValue(
                    key="retry-after",
                    value=str(max(1, round(settings.rate_limit_fill_interval_seconds))),
                ),
                append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
    )


def transcoder_filter(settings: EdgeSettings, descriptor_path: Path) -> GrpcJsonTranscoder:
    """REST/JSON <-> gRPC. JSON uses the proto field names (preserve_proto_field_names), prints
    every primitive field (absent != false for a clinician), and streams one JSON object per
    line; gRPC errors become HTTP statuses with a google.rpc.Status JSON body."""
    return GrpcJsonTranscoder(
        proto_descriptor=str(descriptor_path),
        services=list(EDGE_SERVICES),
        print_options=GrpcJsonTranscoderPrintOptions(
            add_whitespace=False,
            always_print_primitive_fields=True,
            always_print_enums_as_ints=False,
            preserve_proto_field_names=True,
            stream_newline_delimited=True,
        ),
        convert_grpc_status=True,
        ignore_unknown_query_parameters=False,
        request_validation_options=GrpcJsonTranscoderRequestValidationOptions(
            reject_unknown_query_parameters=True,
            reject_binding_body_field_collisions=True,
        ),
        max_request_body_size=settings.max_request_bytes,
    )


def strict_json_filter(descriptor_path: Path) -> Lua:
    """Unknown JSON body fields (and malformed JSON) are a 400 naming them, before the
    transcoder drops them: a Lua script generated from the same descriptor set (see
    gateway.strict_json). The descriptor set must exist when the bootstrap is generated."""
    fds = load_descriptor_set(descriptor_path)
    return Lua(
        default_source_code=DataSource(
            inline_string=generate_strict_json(fds, list(EDGE_SERVICES))
        ),
        stat_prefix="strict_json",
    )


def cors_policy(settings: EdgeSettings) -> CorsPolicy:
    """Exact allowed origins; the browser may send the token and read the request id."""
    return CorsPolicy(
        allow_origin_string_match=[StringMatcher(exact=o) for o in settings.cors_allowed_origins],
        allow_methods="GET, POST, OPTIONS",
        allow_headers="authorization, content-type, x-request-id",
        expose_headers="x-request-id",
        max_age="600",
        allow_credentials=False,
        forward_not_matching_preflights=False,  # answer them here; never forward to a service
    )


def _grpc_route(name: str, match: RouteMatch, timeout_s: float) -> Route:
    deadline_ms = int((timeout_s - DEADLINE_MARGIN_SECONDS) * 1000)
    return Route(
        name=name,
        match=match,
        route=RouteAction(
            cluster=CONSULT_CLUSTER,
            timeout=_seconds(timeout_s),
            # Long streams send progress; an idle gap longer than the timeout is a failure.
            idle_timeout=_seconds(timeout_s),
        ),
        # The edge's budget becomes the service's deadline (context.time_remaining()); a native
        # gRPC caller's own, shorter grpc-timeout is kept.
        request_headers_to_add=[
            HeaderValueOption(
                header=HeaderValue(key="grpc-timeout", value=f"{deadline_ms}m"),
                append_action=HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT,
            )
        ],
    )


def route_config(settings: EdgeSettings) -> RouteConfiguration:
    """Routes see the gRPC path after transcoding (the consult routes only take gRPC)."""
    is_grpc = HeaderMatcher(
        name="content-type", string_match=StringMatcher(prefix="application/grpc")
    )
    is_get = HeaderMatcher(name=":method", string_match=StringMatcher(exact="GET"))
    routes = [
        _grpc_route(
            "consult.stream",
            RouteMatch(path=grpc_path("StreamConsultation"), headers=[is_grpc]),
            settings.stream_timeout_seconds,
        ),
        _grpc_route(
            "consult.unary",
            RouteMatch(prefix=f"/{CONSULT_SERVICE}/", headers=[is_grpc]),
            settings.unary_timeout_seconds,
        ),
        _grpc_route(
            "consult.operations",
            RouteMatch(prefix=f"/{OPERATIONS_SERVICE}/", headers=[is_grpc]),
            settings.unary_timeout_seconds,
        ),
    ]
    routes += [
        Route(
            name=f"admin{edge_path.removeprefix('/admin')}",
            match=RouteMatch(path=edge_path, headers=[is_get]),
            route=RouteAction(
                cluster=ADMIN_CLUSTER, prefix_rewrite=admin_path, timeout=_seconds(5)
            ),
        )
        for edge_path, admin_path in ADMIN_ROUTES.items()
    ]
    # CORS only acts on routes with a route action (not direct responses), so REST paths get
    # a real route; RBAC refuses them before the router unless they were transcoded.
    routes.append(
        Route(
            name="rest.untranscoded",
            match=RouteMatch(prefix="/v1/"),
            route=RouteAction(cluster=UNTRANSCODED_CLUSTER, timeout=_seconds(1)),
        )
    )
    routes.append(
        Route(
            name="not_found",
            match=RouteMatch(prefix="/"),
            direct_response=DirectResponseAction(
                status=404, body=DataSource(inline_string="no such resource")
            ),
        )
    )
    return RouteConfiguration(
        name="edge",
        virtual_hosts=[
            VirtualHost(
                name="edge",
                domains=["*"],
                routes=routes,
                typed_per_filter_config={
                    "envoy.filters.http.cors": Any.pack(cors_policy(settings))
                },
            )
        ],
    )


def _local_reply_config() -> LocalReplyConfig:
    # The strict-JSON check answers with a complete google.rpc.Status body (with details): the
    # first mapper, matched by the dynamic metadata the script sets, passes it through as is.
    strict_json_reply = ResponseMapper(
        filter=AccessLogFilter(
            metadata_filter=MetadataFilter(
                matcher=MetadataMatcher(
                    filter=METADATA_NAMESPACE,
                    path=[MetadataMatcherPathSegment(key=METADATA_KEY)],
                    value=ValueMatcher(bool_match=True),
                ),
                match_if_key_not_found=False,
            )
        ),
        body_format_override=SubstitutionFormatString(
            text_format_source=DataSource(inline_string="%LOCAL_REPLY_BODY%"),
            content_type="application/json",
        ),
    )
    return LocalReplyConfig(
        mappers=[
            strict_json_reply,
            *(
                ResponseMapper(
                    filter=AccessLogFilter(
                        status_code_filter=StatusCodeFilter(
                            comparison=ComparisonFilter(
                                op=ComparisonFilterOp.EQ,
                                value=RuntimeUInt32(
                                    default_value=status, runtime_key=f"edge_lr_{status}"
                                ),
                            )
                        )
                    ),
                    body_format_override=SubstitutionFormatString(
                        json_format=Struct.from_dict(
                            {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []}
                        ),
                        content_type="application/json",
                    ),
                )
                for status, code in _LOCAL_REPLY_CODES.items()
            ),
        ]
    )


def http_connection_manager(settings: EdgeSettings, descriptor_path: Path) -> HttpConnectionManager:
    """The edge listener's HTTP handling: filters, routes, ids, logs, hardening."""
    filters = [
        _filter(
            "envoy.filters.http.header_mutation",
            HeaderMutation(
                mutations=Mutations(request_mutations=_remove_identity_headers()),
            ),
        ),
        _filter("envoy.filters.http.cors", Cors()),
        _filter(
            "envoy.filters.http.health_check",
            HealthCheckFilter(
                pass_through_mode=False,
                headers=[
                    HeaderMatcher(name=":path", string_match=StringMatcher(exact=HEALTH_PATH))
                ],
                cluster_min_healthy_percentages={CONSULT_CLUSTER: Percent(value=100.0)},
            ),
        ),
        _filter("envoy.filters.http.local_ratelimit", local_ratelimit_filter(settings)),
        _filter(JWT_FILTER, jwt_filter(settings)),
        _filter("envoy.filters.http.buffer", Buffer(max_request_bytes=settings.max_request_bytes)),
        _filter(STRICT_JSON_FILTER, strict_json_filter(descriptor_path)),
        _filter(
            "envoy.filters.http.grpc_json_transcoder",
            transcoder_filter(settings, descriptor_path),
        ),
        _filter("envoy.filters.http.rbac", rbac_filter(settings)),
        _filter("envoy.filters.http.router", Router()),
    ]
    return HttpConnectionManager(
        stat_prefix="edge",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        server_name="utimesh-edge",
        route_config=route_config(settings),
        http_filters=filters,
        # The edge is the first hop we trust: the client address is the socket's (or the one a
        # configured number of trusted proxies in front put in X-Forwarded-For), and request
        # ids are ours (returned to the client).
        use_remote_address=True,
        xff_num_trusted_hops=settings.trusted_proxy_hops,
        generate_request_id=True,
        preserve_external_request_id=False,
        always_set_request_id_in_response=True,
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action=HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST,
        common_http_protocol_options=HttpProtocolOptions(
            idle_timeout=_seconds(300),
            headers_with_underscores_action=HttpProtocolOptionsHeadersWithUnderscoresAction.REJECT_REQUEST,
        ),
        http_protocol_options=Http1ProtocolOptions(),
        request_headers_timeout=_seconds(10),
        local_reply_config=_local_reply_config(),
        access_log=[_access_log(settings)],
    )


def _remove_identity_headers() -> list[HeaderMutationRule]:
    return [HeaderMutationRule(remove=SUB_HEADER), HeaderMutationRule(remove=ROLES_HEADER)]


def _access_log(settings: EdgeSettings) -> AccessLog:
    return AccessLog(
        name="envoy.access_loggers.file",
        typed_config=Any.pack(
            FileAccessLog(
                path=settings.access_log_path,
                log_format=SubstitutionFormatString(
                    json_format=Struct.from_dict(ACCESS_LOG_FORMAT)
                ),
            )
        ),
    )


def build_bootstrap(settings: EdgeSettings, descriptor_path: Path) -> Bootstrap:
    """The whole Envoy bootstrap for the edge (static resources, no xDS)."""
    listener = Listener(
        name="edge",
        address=_address(settings.listen_host, settings.listen_port),
        # Listeners reuse ports by default: a stale Envoy would silently share the port.
        enable_reuse_port=False,
        per_connection_buffer_limit_bytes=max(32 * 1024, min(settings.max_request_bytes, 1 << 20)),
        filter_chains=[
            FilterChain(
                filters=[
                    Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=Any.pack(http_connection_manager(settings, descriptor_path)),
                    )
                ]
            )
        ],
    )
    clusters = [
        consult_cluster(settings),
        _dns_cluster(ADMIN_CLUSTER, settings.admin_host, settings.admin_port, 1.0),
        Cluster(
            name=UNTRANSCODED_CLUSTER,
            type=ClusterDiscoveryType.STATIC,
            connect_timeout=_seconds(1),
            load_assignment=ClusterLoadAssignment(cluster_name=UNTRANSCODED_CLUSTER),
        ),
    ]
    if (jwks := jwks_cluster(settings)) is not None:
        clusters.append(jwks)
    return Bootstrap(
        admin=Admin(address=_address(settings.admin_host, settings.admin_port)),
        static_resources=BootstrapStaticResources(listeners=[listener], clusters=clusters),
        overload_manager=OverloadManager(
            resource_monitors=[
                ResourceMonitor(
                    name="envoy.resource_monitors.global_downstream_max_connections",
                    typed_config=Any.pack(
                        DownstreamConnectionsConfig(
                            max_active_downstream_connections=settings.max_connections
                        )
                    ),
                )
            ]
        ),
    )


def _integral_floats_as_ints(value: AnyJson) -> AnyJson:
    """betterproto writes every google.protobuf.Struct number as a float (16.0). Envoy's JSON
    log/local-reply formatter prints such a constant as the *string* "16.0", so integral floats
    become ints; for proto JSON parsing 16 and 16.0 are the same number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def bootstrap_dict(settings: EdgeSettings, descriptor_path: Path) -> dict[str, AnyJson]:
    """The bootstrap as a JSON-ready dict (lowerCamelCase proto JSON, which Envoy accepts)."""
    data: dict[str, AnyJson] = _integral_floats_as_ints(
        json.loads(build_bootstrap(settings, descriptor_path).to_json())
    )
    return data


def write_bootstrap(settings: EdgeSettings, descriptor_path: Path, out: Path) -> Path:
    """Render the bootstrap as YAML to `out` (a run-time artefact, never committed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(bootstrap_dict(settings, descriptor_path), sort_keys=False, width=100)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return out


__all__ = [
    "ACCESS_LOG_FORMAT",
    "ADMIN_CLUSTER",
    "CONSULT_CLUSTER",
    "ROLES_HEADER",
    "STRICT_JSON_FILTER",
    "SUB_HEADER",
    "Bootstrap",
    "bootstrap_dict",
    "build_bootstrap",
    "write_bootstrap",
]
