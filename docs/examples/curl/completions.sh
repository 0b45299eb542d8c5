#!/usr/bin/env bash
# POST /v1/completions: raw text continuation, no chat template.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"
MAX_TOKENS="${MAX_TOKENS:-64}"

curl --fail-with-body -sS "$BASE_URL/v1/completions" \
  -H "Authorization: Bearer $API_KEY" \
  -H "Content-Type: application/json" \
  --data @- <<JSON
{"prompt": "The capital of France is", "max_tokens": $MAX_TOKENS, "temperature": 0, "seed": 1}
JSON
echo
