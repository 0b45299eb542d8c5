"""The gateway wired into the HTTP server: auth, rate limits, usage, response cache, admin, /metrics."""

from tkr_embed.api.gateway.extension import GatewayExtension

__all__ = ["GatewayExtension"]
