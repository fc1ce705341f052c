#!/usr/bin/env bash
# Regenerates the spoken test clips with espeak-ng and sox (Debian packages; `make fixtures` installs them).
# Output: 8 kHz, 16-bit mono WAV with 300 ms of leading and 200 ms of trailing silence.
set -euo pipefail
cd "$(dirname "$0")"
say() {  # say NAME VOICE TEXT
  espeak-ng -v "$2" -s 150 -w "/tmp/callbridge-$1.raw.wav" "$3"
  sox "/tmp/callbridge-$1.raw.wav" -r 8000 -b 16 -c 1 "$1.wav" pad 0.3 0.2 norm -3
  rm -f "/tmp/callbridge-$1.raw.wav"
}
say hello en-us "Hello, this is a test call. Can you hear me?"
say interrupt en-gb "Sorry, stop. I have a question."
