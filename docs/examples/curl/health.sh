#!/usr/bin/env bash
# GET /health (no key needed) and GET /info (any valid key).
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:8008}"
API_KEY="${API_KEY:-}"

curl --fail-with-body -sS "$BASE_URL/health"
echo
curl --fail-with-body -sS "$BASE_URL/info" -H "X-API-Key: $API_KEY"
echo
