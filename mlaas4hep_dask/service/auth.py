"""Who is calling: OIDC bearer tokens checked against the issuer's JWKS, or a trusted OAuth2-Proxy.

Tokens are verified with PyJWT: the signing key comes from the JWKS that the issuer's
discovery document names (cached; fetched again when a token carries an unknown ``kid``,
at most once per ``jwks_cooldown`` seconds), only asymmetric algorithms are accepted (so
``alg: none`` and the HS256-with-the-public-key confusion fail), and ``iss``, ``aud``,
``exp`` and ``nbf`` are checked with a small clock skew.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import jwt

from mlaas4hep_dask.errors import MLaaSError
from mlaas4hep_dask.service.config import ServiceConfig

__all__ = ["AuthError", "Authenticator", "ForbiddenError", "OIDCVerifier", "Principal"]

_DISCOVERY_TTL = 3600.0


class AuthError(MLaaSError):
    """The caller is not authenticated (HTTP 401); the message says why."""

    status = 401


class ForbiddenError(AuthError):
    """The caller is authenticated but lacks a scope (HTTP 403)."""

    status = 403


class IssuerUnavailableError(AuthError):
    """The OIDC issuer cannot be reached or answers nonsense (HTTP 503)."""

    status = 503


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user: str
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    email: str | None = None
    via: str = "token"

    def require(self, scope: str) -> None:
        """Raise :class:`ForbiddenError` unless the caller holds ``scope``."""
        if scope not in self.scopes:
            raise ForbiddenError(f"user {self.user!r} lacks the scope {scope!r} for this request")


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.replace(",", " ").split())
    if isinstance(value, Iterable):
        return {str(v) for v in value}
    return set()


def principal_from_claims(claims: Mapping[str, Any], via: str = "token") -> Principal:
    """The caller described by verified token claims (``scope``/``scp``, ``groups``/``wlcg.groups``)."""
    scopes = _words(claims.get("scope")) | _words(claims.get("scp"))
    groups = {g.lstrip("/") for g in _words(claims.get("groups")) | _words(claims.get("wlcg.groups"))}
    return Principal(
        user=str(claims["sub"]),
        scopes=frozenset(scopes),
        groups=frozenset(groups),
        email=claims.get("email"),
        via=via,
    )


class OIDCVerifier:
    """Verify JWTs from one OIDC issuer for one audience."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        leeway: float = 30.0,
        jwks_cooldown: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.cooldown = jwks_cooldown
        self.timeout = timeout
        self._jwks: jwt.PyJWKClient | None = None
        self._discovered = -float("inf")
        self._lock = threading.Lock()

    def _keys(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None or time.monotonic() - self._discovered > _DISCOVERY_TTL:
                url = f"{self.issuer}/.well-known/openid-configuration"
                try:
                    response = httpx.get(url, timeout=self.timeout)
                    response.raise_for_status()
                    document = response.json()
                    jwks_uri = document["jwks_uri"]
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
                    raise IssuerUnavailableError(
                        f"cannot read the OIDC discovery document {url}: {err}"
                    ) from None
                if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                    raise IssuerUnavailableError(
                        f"the discovery document names issuer {document.get('issuer')!r}, not {self.issuer!r}"
                    )
                self._jwks = jwt.PyJWKClient(
                    jwks_uri, cache_jwk_set=True, lifespan=300, timeout=self.timeout,
                    cooldown_duration=self.cooldown,
                )  # fmt: skip
                self._discovered = time.monotonic()
            return self._jwks

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, issuer, audience and times are valid."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise AuthError(f"malformed bearer token: {err}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"token algorithm {alg!r} is not accepted (accepted: {self.algorithms})")
        if not header.get("kid"):
            raise AuthError("the token header has no 'kid' (key id)")
        try:
            key = self._keys().get_signing_key(str(header["kid"]))
        except jwt.PyJWKClientConnectionError as err:
            raise IssuerUnavailableError(f"cannot fetch the issuer's JWKS: {err}") from None
        except jwt.PyJWKClientError:
            raise AuthError(f"the token's key id {header['kid']!r} is not in the issuer's JWKS") from None
        if key.algorithm_name != alg:  # e.g. RS256 claimed over an EC key: never let PyJWT guess
            raise AuthError(f"the token's algorithm {alg!r} does not match its key ({key.algorithm_name})")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                f"the token is not for this service (audience must be {self.audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError(f"the token was not issued by {self.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except (jwt.PyJWTError, TypeError, ValueError) as err:
            raise AuthError(f"invalid token: {err}") from None
        return dict(claims)


class Authenticator:
    """Turn a request's peer address and headers into a :class:`Principal`, or raise :class:`AuthError`."""

    def __init__(self, config: ServiceConfig, verifier: OIDCVerifier | None = None) -> None:
        self.config = config
        if verifier is None and config.issuer and config.audience:
            verifier = OIDCVerifier(
                config.issuer, config.audience, config.algorithms, config.leeway, config.jwks_cooldown
            )
        self.verifier = verifier

    def _trusted(self, peer: str | None) -> bool:
        if not peer or not self.config.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.config.trusted_proxies)

    def _token(self, token: str, via: str) -> Principal:
        if self.verifier is None:
            raise AuthError("no OIDC issuer is configured to check bearer tokens")
        return principal_from_claims(self.verifier.verify(token), via)

    def authenticate(self, peer: str | None, headers: Mapping[str, str]) -> Principal:
        """Who sent a request from ``peer`` with ``headers`` (lower-case names)."""
        if self.config.insecure_dev:
            return Principal("dev", frozenset(self.config.proxy_scopes), frozenset(), None, "insecure-dev")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        if self._trusted(peer):  # OAuth2-Proxy in front: its headers are believed, nobody else's
            if headers.get("x-forwarded-access-token"):
                return self._token(headers["x-forwarded-access-token"], "proxy-token")
            user = headers.get("x-forwarded-user") or headers.get("x-forwarded-email")
            if user and not bearer:  # a client's own token (passed through) keeps its own scopes
                groups = {g.strip().lstrip("/") for g in headers.get("x-forwarded-groups", "").split(",")}
                return Principal(
                    user=user,
                    scopes=frozenset(self.config.proxy_scopes),
                    groups=frozenset(g for g in groups if g),
                    email=headers.get("x-forwarded-email"),
                    via="proxy",
                )
        if not bearer:
            raise AuthError("this route needs 'Authorization: Bearer <token>'")
        return self._token(bearer, "token")

    def is_admin(self, principal: Principal) -> bool:
        """Whether the caller sees every user's jobs."""
        return self.config.admin_group in principal.groups
