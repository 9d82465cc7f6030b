"""The web dashboard: what the router decided, what it learned, what changed, and two actions.

Usage::

    from kalibr.dashboard import create_dashboard
    app = create_dashboard(store, tenant_for_key=lambda key: "acme" if key == secret else None)

``kalibr serve`` mounts it at ``/dashboard`` behind the tenants' API keys; ``kalibr dashboard --store ...`` serves
it alone on loopback for an embedded store, behind a one-time token. Pages are rendered on the server from the
store's aggregates and each goal's insights document (the one ``get_insights`` returns, rebuilt in the background);
htmx and uPlot, shipped in ``static/``, poll and draw. Jinja2 comes with the ``server`` and
``dashboard`` extras.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from kalibr._exceptions import MissingExtraError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from kalibr.dashboard._app import TenantForKey
    from kalibr.service._tenants import TenantResolver
    from kalibr.stores.base import Store

__all__ = ["create_dashboard", "keys_of", "token_for_tenant"]


def create_dashboard(store: Store, *, tenant_for_key: TenantForKey, read_only: bool = False) -> Starlette:
    """The dashboard as an ASGI app; ``tenant_for_key`` maps an API key to its tenant (None: not valid).

    ``read_only`` hides the actions and refuses them.
    """
    try:
        from kalibr.dashboard._app import build_dashboard
    except ImportError as exc:  # starlette or jinja2 missing
        raise MissingExtraError("the Kalibr dashboard", "dashboard") from exc
    return build_dashboard(store, tenant_for_key=tenant_for_key, read_only=read_only)


def token_for_tenant(token: str, tenant: str) -> TenantForKey:
    """Accept exactly ``token`` (compared in constant time), as ``tenant``: the local dashboard's guard."""

    def tenant_for_key(key: str) -> str | None:
        return tenant if hmac.compare_digest(key.encode(), token.encode()) else None

    return tenant_for_key


def keys_of(resolver: TenantResolver) -> TenantForKey:
    """The service's own key check (hashed keys in the store, cached briefly): the mounted dashboard's guard."""
    from kalibr.service._errors import ServiceError

    def tenant_for_key(key: str) -> str | None:
        try:
            return resolver.resolve(key, None)
        except ServiceError:
            return None

    return tenant_for_key
