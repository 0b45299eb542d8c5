"""POST /tokenize, POST /detokenize, GET /tokenizer_info (as `vllm serve` has them; lm-eval's remote tokenizer uses
all three)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from tkr_embed.api.deps import State
from tkr_embed.api.errors import route_errors
from tkr_embed.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from tkr_embed.services.tokenization import TokenizationService

router = APIRouter(tags=["tokenizer"], responses=route_errors(400, 404, 413, 503))


async def tokenization_service(state: State) -> TokenizationService:
    # Holds nothing but the model context: one per request costs an object (async: no thread-pool hand-off).
    return TokenizationService(state.context)


Tokenization = Annotated[TokenizationService, Depends(tokenization_service)]


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, service: Tokenization) -> TokenizeResponse:
    return await service.tokenize(body)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, service: Tokenization) -> DetokenizeResponse:
    return await service.detokenize(body)


@router.get("/tokenizer_info", response_model=TokenizerInfoResponse)
async def tokenizer_info(service: Tokenization) -> TokenizerInfoResponse:
    return service.info()
