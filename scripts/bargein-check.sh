#!/usr/bin/env bash
# The barge-in acceptance run: a bridge whose embedded echo agent reports speech 300 ms late (a slow service VAD),
# called N times by `callbridge dial` with the caller talking over the reply, then once with only the AI's own echo
# coming back (12 dB down, 120 ms late). Prints the stop latency (onset → clear) p50/p95, the audio heard after the
# onset, and what the call logs say. Usage: scripts/bargein-check.sh [N] (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
port=${PORT:-8197}
bin=.build/debug/callbridge
work=$(mktemp -d)
"$bin" run --host 127.0.0.1 --port "$port" --echo-agent-vad-delay-ms 300 --call-log "$work/calls.jsonl" 2>"$work/bridge.log" &
bridge=$!
trap 'kill $bridge 2>/dev/null; wait $bridge 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
for i in $(seq 1 "$runs"); do
  "$bin" dial "ws://127.0.0.1:$port/twilio/media" --audio Fixtures/audio/hello.wav \
    --barge-in-at 6.5 --barge-in-audio Fixtures/audio/interrupt.wav --json >>"$work/bargein.jsonl"
done
"$bin" dial "ws://127.0.0.1:$port/twilio/media" --audio Fixtures/audio/hello.wav --duration 14 \
  --echo-loss-db 12 --echo-delay-ms 120 --json >"$work/echo.json"
sleep 1
python3 - "$work" "$runs" <<'PY'
import json, sys
work, runs = sys.argv[1], int(sys.argv[2])
def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]
dials = [json.loads(l) for l in open(f"{work}/bargein.jsonl")]
stops = [d["barge_in_to_clear_ms"] for d in dials if d["barge_in_to_clear_ms"] is not None]
heard = [d["heard_after_barge_in_ms"] for d in dials if d["heard_after_barge_in_ms"] is not None]
calls = [json.loads(l) for l in open(f"{work}/calls.jsonl")]
print(f"barge-in runs: {len(dials)}, stopped: {len(stops)}")
print(f"onset -> clear (AI stops): p50 {pct(stops, 50):.1f} ms, p95 {pct(stops, 95):.1f} ms, max {max(stops):.1f} ms")
print(f"audio heard after the onset: p50 {pct(heard, 50):.1f} ms, max {max(heard):.1f} ms")
print("bridge pause after its own onset (call log barge_in_pause_ms):", [c["barge_in_pause_ms"] for c in calls[:runs]])
echo = json.loads(open(f"{work}/echo.json").read())
last = calls[-1]
print(f"echo-only call: clears {echo['clears']}, barge_in_events {last['barge_in_events']}, "
      f"barge_in_pauses {last['barge_in_pauses']}, cancels_sent {last['cancels_sent']}, responses {last['responses']}, "
      f"echo path learned {last['echo_delay_ms']} ms / {last['echo_return_loss_db']} dB")
ok = len(stops) == len(dials) and pct(stops, 95) <= 80 and echo["clears"] == 0 and last["barge_in_events"] == 0 \
    and last["cancels_sent"] == 0 and last["responses"] == 1
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
