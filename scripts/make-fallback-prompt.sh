#!/usr/bin/env bash
# Regenerates the default fallback prompt (what a caller hears when the model's service cannot be reached) with
# espeak-ng and sox from Debian: 8 kHz μ-law, raw, normalised to -6 dBFS, with 200 ms of silence either side.
# The result is committed as Sources/CallBridge/Resources/fallback-prompt.ulaw; `--fallback-prompt FILE` replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh espeak-ng sox > /dev/null
text="${1:-Sorry, we cannot take your call right now. Please try again later. Goodbye.}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/speech.wav" "$text"
sox "$tmp/speech.wav" -r 8000 -c 1 -e mu-law -t raw Sources/CallBridge/Resources/fallback-prompt.ulaw pad 0.2 0.2 norm -6
echo "wrote Sources/CallBridge/Resources/fallback-prompt.ulaw ($(wc -c < Sources/CallBridge/Resources/fallback-prompt.ulaw) bytes)"
