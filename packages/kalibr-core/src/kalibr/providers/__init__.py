"""Model providers: wire formats over httpx, registered through the ``kalibr_register_providers`` hook."""

from kalibr.providers.base import (
    DirectProvider,
    Provider,
    ProviderRequest,
    ProviderResponse,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    map_provider_errors,
)

__all__ = [
    "DirectProvider",
    "Provider",
    "ProviderRequest",
    "ProviderResponse",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "map_provider_errors",
]
