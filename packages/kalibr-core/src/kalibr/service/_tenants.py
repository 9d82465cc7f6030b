"""API keys and tenants: keys are shown once, stored as SHA-256 hashes, and map a request to its tenant."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from collections.abc import Callable

from kalibr._exceptions import UserError
from kalibr.service._errors import Forbidden, Unauthorized
from kalibr.stores.base import DEFAULT_TENANT, Store

__all__ = ["API_KEY_PREFIX", "TenantResolver", "check_tenant", "hash_api_key", "new_api_key"]

API_KEY_PREFIX = "kal_"
_TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_api_key() -> str:
    """A fresh API key: ``kal_`` plus 256 random bits, URL-safe."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """The SHA-256 hex digest under which a key is stored (the key itself never is)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def check_tenant(tenant: object) -> str:
    """Return ``tenant`` if it is a valid tenant name, else raise ``UserError`` saying what one may be."""
    if not isinstance(tenant, str) or not _TENANT_PATTERN.fullmatch(tenant):
        raise UserError(
            f"invalid tenant {tenant!r}: a tenant is 1-64 letters, digits and _ . -, starting with a letter or digit"
        )
    return tenant


class TenantResolver:
    """Turns a request's ``X-API-Key`` and ``X-Tenant-ID`` into its tenant, or raises 401/403.

    Keys are answered from a snapshot of the store's whole key table (hashes and tenants: a few rows), so a request
    costs no store query, whatever its key: the snapshot is read again when it is ``cache_seconds`` old (a revoked
    key keeps working at most that long), or, for a key it lacks, when it is ``miss_seconds`` old (a key created
    meanwhile is refused at most that long). A flood of wrong keys, one repeated or a fresh one each time, thus costs
    at most one read of the key table per ``miss_seconds``. With ``auth=False`` every request is the ``default``
    tenant (local use and tests only: never expose such a service).
    """

    def __init__(
        self,
        store: Store,
        *,
        auth: bool = True,
        cache_seconds: float = 5.0,
        miss_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._auth = auth
        self._cache_seconds = cache_seconds
        self._miss_seconds = miss_seconds
        self._clock = clock
        self._snapshot: tuple[dict[str, str], float] = ({}, -math.inf)
        """Key hash -> tenant, and when it was read: replaced whole, so a reader sees one consistent pair."""
        self._reading = threading.Lock()

    def resolve_cached(self, api_key: str | None, claimed_tenant: str | None) -> str | None:
        """The tenant if the snapshot can answer (raises 401/403 as ``resolve`` does), else None: call ``resolve``
        then, off the event loop (it may read the key table)."""
        if not self._auth:
            return DEFAULT_TENANT
        if not api_key:
            raise _missing_key()
        keys, read_at = self._snapshot
        tenant = keys.get(hash_api_key(api_key))
        if self._stale(tenant, read_at):
            return None
        if tenant is None:
            raise _invalid_key()
        return _checked(tenant, claimed_tenant)

    def resolve(self, api_key: str | None, claimed_tenant: str | None) -> str:
        if not self._auth:
            return DEFAULT_TENANT
        if not api_key:
            raise _missing_key()
        key_hash = hash_api_key(api_key)
        with self._reading:  # one reader at a time; the others then find the snapshot it read
            keys, read_at = self._snapshot
            tenant = keys.get(key_hash)
            if self._stale(tenant, read_at):
                now = self._clock()
                keys = {stored: owner for owner, stored, _ in self._store.list_api_keys(None)}
                self._snapshot = (keys, now)
                tenant = keys.get(key_hash)
        if tenant is None:
            raise _invalid_key()
        return _checked(tenant, claimed_tenant)

    def _stale(self, tenant: str | None, read_at: float) -> bool:
        """Must the key table be read again to answer (a found key: every ``cache_seconds``; a missing one: every
        ``miss_seconds``)?"""
        return self._clock() - read_at >= (self._cache_seconds if tenant is not None else self._miss_seconds)


def _missing_key() -> Unauthorized:
    return Unauthorized("missing X-API-Key header: create a key with `kalibr keys create --tenant NAME`")


def _invalid_key() -> Unauthorized:
    return Unauthorized("invalid API key in X-API-Key: check the key, or create one with `kalibr keys create`")


def _checked(tenant: str, claimed_tenant: str | None) -> str:
    if claimed_tenant and claimed_tenant != tenant:
        raise Forbidden(f"X-Tenant-ID {claimed_tenant!r} does not match the tenant of this API key")
    return tenant
