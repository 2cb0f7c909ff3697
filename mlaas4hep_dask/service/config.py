"""Configuration of the submit service: one dataclass, filled from the command line or the environment."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlaas4hep_dask.errors import ConfigError

__all__ = ["ServiceConfig", "default_workdir"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_workdir() -> Path:
    """``$XDG_STATE_HOME/mlaas4hep/service``, else ``~/.local/state/mlaas4hep/service``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mlaas4hep" / "service"


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """What the service needs to know; every field has a safe default but the OIDC issuer.

    Attributes
    ----------
    workdir
        Where the service keeps its job database (by default), uploads and job results;
        by default ``$XDG_STATE_HOME/mlaas4hep/service`` (``~/.local/state/...``): outside any
        checkout, so that a runtime database never lands in a repository.
    db
        SQLAlchemy URL of the job database (``sqlite:///WORKDIR/jobs.sqlite`` by default;
        ``postgresql://user@host/db`` works too).
    issuer, audience
        The OIDC issuer (its ``/.well-known/openid-configuration`` is fetched) and the
        audience the tokens must carry.
    algorithms
        Accepted JWT signature algorithms (asymmetric only).
    leeway
        Clock skew allowed on ``exp``/``nbf``/``iat``, in seconds.
    submit_scope, read_scope
        Scopes needed to submit/cancel and to read.
    admin_group
        Members of this group (``groups`` or ``wlcg.groups`` claim) see every job.
    trusted_proxies
        Addresses (CIDR) of reverse proxies (OAuth2-Proxy) whose ``X-Forwarded-User`` /
        ``X-Forwarded-Email`` / ``X-Forwarded-Access-Token`` headers are believed.
    proxy_scopes
        Scopes given to users authenticated by a trusted proxy's user headers.
    insecure_dev
        Accept every request as user ``dev`` (with both scopes), for local development only.
    unsandboxed_jobs
        Run jobs without the sandbox (see :mod:`mlaas4hep_dask.service.sandbox`): the operator
        accepts that a job's model.py runs with the worker's powers.
    sandbox, sandbox_image
        Which sandbox jobs run in (``bubblewrap``, ``podman`` or ``apptainer``) and its image
        (podman: an image or a root folder, default the workers' own system read-only;
        apptainer: a SIF file or folder, required).
    data_roots
        Local folders a job may read input files from (besides remote URLs and its upload).
    repository
        Inference model repository (folder or fsspec URL) where ``push`` stores bundles.
    max_jobs_per_user, max_running
        Concurrent running jobs per user and in all.
    job_timeout
        Longest (and default) run time of a job, in seconds.
    max_body, max_upload
        Largest JSON request body and largest upload tarball, in bytes.
    """

    workdir: Path = dataclasses.field(default_factory=default_workdir)
    db: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway: float = 30.0
    jwks_cooldown: float = 10.0
    submit_scope: str = "mlaas.submit"
    read_scope: str = "mlaas.read"
    admin_group: str = "mlaas-admin"
    trusted_proxies: tuple[_Network, ...] = ()
    proxy_scopes: tuple[str, ...] = ("mlaas.submit", "mlaas.read")
    insecure_dev: bool = False
    unsandboxed_jobs: bool = False
    sandbox: str = "bubblewrap"
    sandbox_image: str | None = None
    data_roots: tuple[Path, ...] = ()
    repository: str | None = None
    max_jobs_per_user: int = 2
    max_running: int = 8
    job_timeout: float = 24 * 3600.0
    max_body: int = 2**20
    max_upload: int = 64 * 2**20

    def __post_init__(self) -> None:
        if not self.insecure_dev and not (self.issuer and self.audience):
            raise ConfigError(
                "the service needs an OIDC issuer and audience (--issuer/--audience or "
                "MLAAS4HEP_OIDC_ISSUER/MLAAS4HEP_OIDC_AUDIENCE), or --insecure-dev for local use"
            )
        bad = [a for a in self.algorithms if not a.startswith(("RS", "ES", "PS", "EdDSA"))]
        if bad:
            raise ConfigError(f"only asymmetric JWT algorithms may be accepted, not {bad}")
        for name in ("max_jobs_per_user", "max_running", "max_body", "max_upload"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.job_timeout <= 0:
            raise ConfigError(f"job_timeout must be positive, not {self.job_timeout}")

    @property
    def db_url(self) -> str:
        """The database URL (SQLite in the work dir unless ``db`` is set)."""
        return self.db or f"sqlite:///{(self.workdir / 'jobs.sqlite').resolve()}"

    @classmethod
    def build(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        trusted_proxies: Sequence[str] = (),
        data_roots: Sequence[str | Path] = (),
        **fields: object,
    ) -> ServiceConfig:
        """A config from command-line style values, falling back to ``MLAAS4HEP_OIDC_*`` variables."""
        env = os.environ if environ is None else environ
        values = {k: v for k, v in fields.items() if v is not None}
        values.setdefault("issuer", env.get("MLAAS4HEP_OIDC_ISSUER") or None)
        values.setdefault("audience", env.get("MLAAS4HEP_OIDC_AUDIENCE") or None)
        networks = []
        for text in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"--trusted-proxy {text!r} is not an address or CIDR network") from None
        roots = tuple(Path(r).resolve() for r in data_roots)
        if "workdir" in values:
            values["workdir"] = Path(str(values["workdir"]))
        return cls(trusted_proxies=tuple(networks), data_roots=roots, **values)  # type: ignore[arg-type]
