#!/usr/bin/env bash
# POST /stream: Server-Sent Events, one `data: {"chunk": ...}` line per delta, then `data: [DONE]`.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-512}"

curl --fail-with-body -sS -N "$BASE_URL/stream" \
  -H "X-API-Key: $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{"text": "Write a haiku about the sea.", "max_tokens": $MAX_TOKENS, "reasoning_level": "low"}
JSON
