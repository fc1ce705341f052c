#!/usr/bin/env python3
"""Measures what one bridge process uses, idle and with N simultaneous calls, for sizing (deploy/README.md).

    swift build -c release --product callbridge --static-swift-stdlib --scratch-path .build-deploy
    scripts/measure-sizing.py --binary .build-deploy/release/callbridge --calls 25,50 --duration 40

It starts `callbridge echo-agent` as a separate process (so that its cost is not counted; --embedded counts it), then
`callbridge run` on port 18080 against it, and reads the bridge's VmRSS and VmHWM from /proc/PID/status and its CPU
time from /proc/PID/stat: first for 10 s idle, then while N `callbridge dial` calls (Fixtures/audio/hello.wav, then
silence, --duration seconds each) run at once. Memory is the median VmRSS over the busy window, CPU the bridge's
CPU seconds per wall-clock second over the same window. The dial processes run on the same machine, so keep N low
enough that the machine is not saturated (check the load average), or the bridge is starved and CPU reads low.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def status(pid):
    values = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            key, value = line.split(":", 1)
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(value.split()[0])
    return values


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build-deploy", "release", "callbridge"))
    parser.add_argument("--calls", default="25,50", help="comma-separated call counts, run one after the other")
    parser.add_argument("--duration", type=int, default=40, help="seconds each call lasts")
    parser.add_argument("--embedded", action="store_true", help="use the embedded echo agent (counted in the bridge)")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    audio = os.path.join(ROOT, "Fixtures", "audio", "hello.wav")
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    # The dial client does not sign its requests; a local measurement needs no Twilio signatures or call tokens.
    env["CALLBRIDGE_INSECURE_NO_SIGNATURE"] = "1"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    children = []
    command = [args.binary, "run", "--port", str(args.port), "--call-log", os.devnull, "--log-level", "warning"]
    if not args.embedded:
        agent_port = args.port + 10
        children.append(subprocess.Popen([args.binary, "echo-agent", "--port", str(agent_port), "--log-level", "warning"], **quiet))
        time.sleep(1)
        command += ["--agent", "remote", "--realtime-url", "ws://127.0.0.1:%d/v1/realtime" % agent_port]
    bridge = subprocess.Popen(command, env=env, **quiet)
    children.append(bridge)
    try:
        time.sleep(3)
        before = cpu_seconds(bridge.pid)
        time.sleep(10)
        idle_cpu = (cpu_seconds(bridge.pid) - before) / 10
        print(json.dumps({"calls": 0, "rss_kb": status(bridge.pid)["VmRSS"], "cpu_cores": round(idle_cpu, 4)}), flush=True)
        for count in [int(n) for n in args.calls.split(",")]:
            dials = []
            for _ in range(count):
                dials.append(subprocess.Popen([args.binary, "dial", "ws://127.0.0.1:%d/twilio/media" % args.port,
                                               "--audio", audio, "--duration", str(args.duration)], **quiet))
                time.sleep(0.05)
            time.sleep(5)
            start_cpu, start = cpu_seconds(bridge.pid), time.monotonic()
            samples = []
            while time.monotonic() - start < args.duration - 8 - count * 0.05:
                samples.append(status(bridge.pid)["VmRSS"])
                time.sleep(1)
            cores = (cpu_seconds(bridge.pid) - start_cpu) / (time.monotonic() - start)
            peak = status(bridge.pid)["VmHWM"]
            load = os.getloadavg()[0]
            failed = sum(1 for d in dials if d.wait() != 0)
            print(json.dumps({"calls": count, "rss_kb": statistics.median(samples), "hwm_kb": peak,
                              "cpu_cores": round(cores, 4), "load_average": round(load, 1), "failed_dials": failed}),
                  flush=True)
            time.sleep(4)
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGINT)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main()
