"""API keys and tenants: keys are shown once, stored as SHA-256 hashes, and map a request to its tenant."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
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

    Known keys are cached for ``cache_seconds`` so a hot path costs no store read; a revoked key therefore keeps
    working for at most that long. Unknown keys are cached too (at most ``max_unknown`` of them, for
    ``unknown_seconds``), so a flood of wrong keys costs no store query: a key created meanwhile is refused for at
    most that long. With ``auth=False`` every request is the ``default`` tenant (local use and tests only: never
    expose such a service).
    """

    def __init__(
        self,
        store: Store,
        *,
        auth: bool = True,
        cache_seconds: float = 5.0,
        unknown_seconds: float = 2.0,
        max_unknown: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._auth = auth
        self._cache_seconds = cache_seconds
        self._unknown_seconds = unknown_seconds
        self._max_unknown = max_unknown
        self._clock = clock
        self._known: dict[str, tuple[str, float]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def resolve_cached(self, api_key: str | None, claimed_tenant: str | None) -> str | None:
        """The tenant if the answer needs no store read (no auth, a cached key; raises for a cached wrong key),
        else None: call ``resolve`` then (off the event loop)."""
        if not self._auth:
            return DEFAULT_TENANT
        if not api_key:
            return self.resolve(api_key, claimed_tenant)
        key_hash = hash_api_key(api_key)
        now = self._clock()
        with self._lock:
            known = self._known.get(key_hash)
            unknown_until = self._unknown.get(key_hash)
        if known is not None and known[1] > now:
            return _checked(known[0], claimed_tenant)
        if unknown_until is not None and unknown_until > now:
            raise _invalid_key()
        return None

    def resolve(self, api_key: str | None, claimed_tenant: str | None) -> str:
        if not self._auth:
            return DEFAULT_TENANT
        if not api_key:
            raise Unauthorized("missing X-API-Key header: create a key with `kalibr keys create --tenant NAME`")
        tenant = self._tenant_for(hash_api_key(api_key))
        if tenant is None:
            raise _invalid_key()
        return _checked(tenant, claimed_tenant)

    def _tenant_for(self, key_hash: str) -> str | None:
        now = self._clock()
        with self._lock:
            cached = self._known.get(key_hash)
            unknown_until = self._unknown.get(key_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        if unknown_until is not None and unknown_until > now:
            return None
        tenant = self._store.tenant_for_key(key_hash)
        with self._lock:
            if tenant is not None:
                self._known[key_hash] = (tenant, now + self._cache_seconds)
                self._unknown.pop(key_hash, None)
            else:
                self._unknown[key_hash] = now + self._unknown_seconds
                self._unknown.move_to_end(key_hash)
                while len(self._unknown) > self._max_unknown:
                    self._unknown.popitem(last=False)
        return tenant


def _invalid_key() -> Unauthorized:
    return Unauthorized("invalid API key in X-API-Key: check the key, or create one with `kalibr keys create`")


def _checked(tenant: str, claimed_tenant: str | None) -> str:
    if claimed_tenant and claimed_tenant != tenant:
        raise Forbidden(f"X-Tenant-ID {claimed_tenant!r} does not match the tenant of this API key")
    return tenant
