"""The submit service: workflows over HTTP, run on the Dask cluster, behind OIDC bearer tokens.

Layout: :mod:`.config` (settings), :mod:`.auth` (tokens and the trusted proxy),
:mod:`.submission` (what ``/submit`` accepts), :mod:`.uploads`, :mod:`.store` (jobs and logs
in SQLite/PostgreSQL), :mod:`.runner` (dispatch on Dask), ``._job`` (the task on the worker),
:mod:`.app` (FastAPI routes).
"""

from __future__ import annotations

from mlaas4hep_dask.service.auth import Authenticator, AuthError, ForbiddenError, OIDCVerifier, Principal
from mlaas4hep_dask.service.config import ServiceConfig
from mlaas4hep_dask.service.store import Job, JobStore
from mlaas4hep_dask.service.submission import Submission, SubmissionError

__all__ = [
    "AuthError",
    "Authenticator",
    "ForbiddenError",
    "Job",
    "JobStore",
    "OIDCVerifier",
    "Principal",
    "ServiceConfig",
    "Submission",
    "SubmissionError",
]
