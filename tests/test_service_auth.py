"""The submit service's authentication and authorization, over real HTTP against a real OIDC issuer."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from mlaas4hep_dask.errors import ConfigError
from mlaas4hep_dask.service.app import create_app
from mlaas4hep_dask.service.config import ServiceConfig
from mlaas4hep_dask.service.store import JobStore

from ._oidc import AUDIENCE, Issuer, new_key, oidc_issuer
from ._servers import CHROMIUM, colours, render_offline, uvicorn_server


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with oidc_issuer() as it:
        yield it


def _serve(tmp: Path, **fields: object) -> Iterator[str]:
    config = ServiceConfig.build(workdir=tmp, environ={}, **fields)  # type: ignore[arg-type]
    store = JobStore(config.db_url)
    with uvicorn_server(create_app(config, store, runner=None)) as url:
        yield url
    store.close()


@pytest.fixture(scope="module")
def service(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tmp_path_factory.mktemp("svc"), issuer=issuer.url, audience=AUDIENCE, jwks_cooldown=0.0)


def _get(url: str, token: str | None = None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{url}/jobs", headers=headers, timeout=30)


def _none_token(issuer: Issuer) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': issuer.kid})}.{part(claims)}."


def _hs256_with_public_key(issuer: Issuer) -> str:
    """The classic confusion: HMAC "signed" with the issuer's public key as the secret."""
    public = (
        issuer.keys[issuer.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}

    def part(obj: object) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=")

    import hashlib
    import hmac

    signing_input = part(header) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.new(public, signing_input, hashlib.sha256).digest()).rstrip(
        b"="
    )
    return (signing_input + b"." + signature).decode()


def test_healthz_needs_no_token(service: str) -> None:
    assert httpx.get(f"{service}/healthz").json()["status"] == "ok"


def test_a_valid_token_is_accepted_and_names_the_caller(service: str, issuer: Issuer) -> None:
    response = httpx.get(f"{service}/whoami", headers={"Authorization": f"Bearer {issuer.token('alice')}"})
    assert response.status_code == 200, response.text
    who = response.json()
    assert (who["user"], who["email"], who["via"]) == ("alice", "alice@example.org", "token")
    assert who["scopes"] == ["mlaas.read", "mlaas.submit"]
    assert _get(service, issuer.token()).json() == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: None, "needs 'Authorization: Bearer <token>'"),
        (lambda i: "not-a-jwt", "malformed bearer token"),
        (
            lambda i: i.token(key=new_key()),
            "signature does not verify",
        ),  # forged: another key, the issuer's kid
        (lambda i: i.token(iss="http://127.0.0.1:1/evil"), "was not issued by"),
        (lambda i: i.token(aud="another-service"), "not for this service"),
        (lambda i: i.token(lifetime=-120), "expired"),
        (lambda i: i.token(nbf=600), "not valid yet"),
        (lambda i: i.token(kid="unknown-kid"), "not in the issuer's JWKS"),
        (lambda i: i.token(drop=("exp",)), 'missing the "exp" claim'),
        (lambda i: i.token(drop=("sub",)), 'missing the "sub" claim'),
        (_none_token, "algorithm 'none' is not accepted"),
        (_hs256_with_public_key, "algorithm 'HS256' is not accepted"),
    ],
    ids=[
        "missing",
        "malformed",
        "forged",
        "issuer",
        "audience",
        "expired",
        "nbf",
        "kid",
        "no-exp",
        "no-sub",
        "alg-none",
        "hs256-confusion",
    ],
)
def test_bad_tokens_are_rejected_with_401(service: str, issuer: Issuer, make, message: str) -> None:
    response = _get(service, make(issuer))
    assert response.status_code == 401, response.text
    assert message in response.json()["error"]
    assert response.headers["www-authenticate"].startswith('Bearer realm="mlaas4hep"')


def test_small_clock_skew_is_tolerated(service: str, issuer: Issuer) -> None:
    assert _get(service, issuer.token(lifetime=-10)).status_code == 200  # expired 10 s ago: within 30 s
    assert _get(service, issuer.token(nbf=10)).status_code == 200


def test_missing_scopes_are_rejected_with_403(service: str, issuer: Issuer) -> None:
    reader = issuer.token("carol", scope="mlaas.read")
    assert _get(service, reader).status_code == 200
    response = httpx.post(f"{service}/submit", json={}, headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 403
    assert "lacks the scope 'mlaas.submit'" in response.json()["error"]
    nothing = issuer.token("dave", scope="openid profile")
    assert _get(service, nothing).status_code == 403


def test_a_rotated_key_is_fetched_on_its_unknown_kid(service: str, issuer: Issuer) -> None:
    assert _get(service, issuer.token()).status_code == 200
    old = issuer.token()
    before = issuer.jwks_requests
    issuer.rotate("EC")  # ES256 from now on
    assert _get(service, issuer.token()).status_code == 200
    assert issuer.jwks_requests == before + 1
    assert _get(service, old).status_code == 401  # the old key is no longer published


def test_an_unreachable_issuer_is_a_503_naming_it(tmp_path: Path, issuer: Issuer) -> None:
    for url in _serve(tmp_path, issuer="http://127.0.0.1:9", audience=AUDIENCE):
        response = _get(url, issuer.token())
        assert response.status_code == 503
        assert "http://127.0.0.1:9/.well-known/openid-configuration" in response.json()["error"]


def test_the_proxy_headers_are_believed_only_from_a_trusted_proxy(tmp_path: Path, issuer: Issuer) -> None:
    headers = {
        "X-Forwarded-User": "erin",
        "X-Forwarded-Email": "erin@example.org",
        "X-Forwarded-Groups": "cms,mlaas-admin",
    }
    for url in _serve(tmp_path / "a", issuer=issuer.url, audience=AUDIENCE, trusted_proxies=["127.0.0.1/32"]):
        who = httpx.get(f"{url}/whoami", headers=headers).json()
        assert (who["user"], who["via"], who["admin"]) == ("erin", "proxy", True)
        assert who["scopes"] == ["mlaas.read", "mlaas.submit"]
        token = httpx.get(f"{url}/whoami", headers={"X-Forwarded-Access-Token": issuer.token("frank")}).json()
        assert (token["user"], token["via"]) == ("frank", "proxy-token")
        forged = httpx.get(f"{url}/whoami", headers={"X-Forwarded-Access-Token": issuer.token(key=new_key())})
        assert forged.status_code == 401  # a token passed by the proxy is still verified
        assert httpx.get(f"{url}/whoami").status_code == 401  # the proxy sent no user: no one
        # a client's own bearer token passed through the proxy keeps its own (narrower) scopes
        own = {**headers, "Authorization": f"Bearer {issuer.token('gina', scope='mlaas.read')}"}
        who = httpx.get(f"{url}/whoami", headers=own).json()
        assert (who["user"], who["scopes"], who["via"]) == ("gina", ["mlaas.read"], "token")
    for url in _serve(tmp_path / "b", issuer=issuer.url, audience=AUDIENCE, trusted_proxies=["10.0.0.0/8"]):
        assert httpx.get(f"{url}/whoami", headers=headers).status_code == 401  # we are not that proxy
        assert (
            httpx.get(f"{url}/whoami", headers={**headers, "X-Forwarded-For": "10.1.2.3"}).status_code == 401
        )


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="needs an OIDC issuer and audience"):
        ServiceConfig.build(environ={})
    config = ServiceConfig.build(
        environ={"MLAAS4HEP_OIDC_ISSUER": "https://iam.example", "MLAAS4HEP_OIDC_AUDIENCE": "a"}
    )
    assert (config.issuer, config.audience) == ("https://iam.example", "a")
    with pytest.raises(ConfigError, match=re.escape("--trusted-proxy 'proxy.example' is not an address")):
        ServiceConfig.build(environ={}, insecure_dev=True, trusted_proxies=["proxy.example"])
    with pytest.raises(ConfigError, match="only asymmetric JWT algorithms"):
        ServiceConfig.build(environ={}, insecure_dev=True, algorithms=("HS256",))


def test_the_api_page_needs_no_internet_and_shows_the_submit_body(service: str) -> None:
    page = httpx.get(f"{service}/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert httpx.get(f"{service}/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = httpx.get(f"{service}/openapi.json").json()
    submit = spec["paths"]["/submit"]["post"]["requestBody"]["content"]["application/json"]
    assert "files" in submit["schema"]["properties"]
    assert submit["examples"]["a job"]["value"]["labels"] == [1, 0]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make test installs Debian's)")
def test_the_api_page_renders_in_a_browser_without_internet(service: str, tmp_path: Path) -> None:
    dom = render_offline(f"{service}/docs", tmp_path / "docs.png")
    assert "Failed to load API definition" not in dom
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert {"/submit", "/jobs/{job_id}", "/upload"} <= shown
    assert colours(tmp_path / "docs.png") > 50  # not a white page
