#!/usr/bin/env bash
# Regenerates the audio fixtures with espeak-ng and sox (Debian packages; `make fixtures` installs them).
# Speech: 8 kHz, 16-bit mono WAV, peak-normalised to -3 dBFS, with 300 ms of leading and 200 ms of trailing silence.
# The barge-in quality test mixes these in code (echo at several losses and delays, noise at several SNRs).
set -euo pipefail
cd "$(dirname "$0")"
say() {  # say NAME VOICE TEXT
  espeak-ng -v "$2" -s 150 -w "/tmp/callbridge-$1.raw.wav" "$3"
  sox "/tmp/callbridge-$1.raw.wav" -r 8000 -b 16 -c 1 "$1.wav" pad 0.3 0.2 norm -3
  rm -f "/tmp/callbridge-$1.raw.wav"
}
# `callbridge dial` demo clips.
say hello en-us "Hello, this is a test call. Can you hear me?"
say interrupt en-gb "Sorry, stop. I have a question."
# Barge-in quality set: the AI's voice (what comes back as echo) and a different caller voice.
say ai-reply en-gb "Thank you for calling. Your order shipped yesterday and should arrive on Monday. Is there anything else I can help you with?"
say caller-barge-in en-us+m3 "Wait, wait. I need to change the address."
# A cough: a 120 ms burst of shaped noise.
sox -n -r 8000 -b 16 -c 1 cough.wav synth 0.12 pinknoise fade q 0.01 0.12 0.08 gain -8 pad 0.3 0.2
# A door slam / knock: a 350 ms burst of shaped noise, long enough to pass the 150 ms energy gate.
sox -n -r 8000 -b 16 -c 1 door.wav synth 0.35 brownnoise fade q 0.005 0.35 0.3 gain -4 pad 0.3 0.2
# Line noise: 10 s of pink noise at about -30 dBFS RMS (scaled to the SNR under test in code).
sox -n -r 8000 -b 16 -c 1 line-noise.wav synth 10 pinknoise gain -22
