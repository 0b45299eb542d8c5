"""GET /health and GET /info."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

from fastapi import APIRouter, Request, Response

from tkr_embed import __version__
from tkr_embed.api.deps import State
from tkr_embed.api.engine_factory import DEMO_MODEL_SKILLS
from tkr_embed.api.lifecycle import Lifecycle, Phase
from tkr_embed.api.state import ServerState
from tkr_embed.protocol.native import HealthResponse, InfoResponse, MemoryInfo

router = APIRouter(tags=["server"])
CAPABILITIES = [
    "generate",
    "chat",
    "stream",
    "reasoning",
    "openai.chat.completions",
    "openai.completions",
    "openai.models",
    "openai.responses",
    "tools",
    "logprobs",
]


def resident_memory_bytes() -> int:
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(request: Request, response: Response) -> HealthResponse:
    """200 while the server takes generation requests; 503 while it starts, drains, or its engine is dead or
    restarting (`status` says which), so a load balancer sends the traffic elsewhere."""
    lifecycle: Lifecycle = request.app.state.lifecycle
    status = lifecycle.status
    state: ServerState | None = getattr(request.app.state, "server", None)
    if status is not Phase.HEALTHY:
        response.status_code = 503
    if state is None:
        return HealthResponse(
            status=status.value, model_loaded=False, uptime=0.0, memory=None, active_requests=0, waiting_requests=0
        )
    try:
        stats = state.engine.stats()
    except RuntimeError:  # no engine process to ask (restarting)
        stats = None
    memory = MemoryInfo(
        rss_bytes=resident_memory_bytes(),
        kv_cache_blocks_total=stats.kv_blocks_total if stats else 0,
        kv_cache_blocks_used=stats.kv_blocks_used if stats else 0,
        kv_cache_usage=stats.kv_usage if stats else 0.0,
    )
    return HealthResponse(
        status=status.value,
        model_loaded=True,
        uptime=state.uptime_s,
        memory=memory,
        active_requests=stats.running + stats.waiting if stats else 0,
        waiting_requests=stats.waiting if stats else 0,
    )


@router.get("/info", response_model=InfoResponse)
async def info(state: State) -> InfoResponse:
    runner = state.engine.info
    return InfoResponse(
        model=state.model_id,
        model_path=state.model_path,
        demo_model=state.is_demo,
        demo_model_skills=list(DEMO_MODEL_SKILLS) if state.is_demo else None,
        context_length=state.context.context_length,
        vocab_size=runner.vocab_size,
        quantization=runner.quantization,
        quantization_reason=runner.extra.get("quantization_reason"),
        device=runner.device,
        dtype=runner.dtype,
        capabilities=CAPABILITIES,
        version=__version__,
    )
