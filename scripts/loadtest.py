#!/usr/bin/env python3
"""`make loadtest`: the bridge under load on loopback, one table row per call count.

    scripts/loadtest.py --binary .build/release/callbridge --calls 10,100 --duration 60 --ramp 10

For each N it starts, as separate processes on 127.0.0.1:
  - `callbridge load-agent` over TLS (Fixtures/tls/localhost.pem), the Realtime double;
  - `callbridge run` as in production: `--agent remote`, `--realtime-url wss://localhost:PORT/v1/realtime` with
    `--realtime-ca-file Fixtures/tls/test-ca.pem`, a dummy OPENAI_API_KEY, Twilio signatures and call tokens on
    (a dummy TWILIO_AUTH_TOKEN), local barge-in with the Silero confirmer (the defaults);
  - `callbridge load --calls N --ramp R --duration S` against it, signing each call (voice webhook, then the media
    upgrade with the call token), writing its report as JSON.

With --realtime-priority P (the default is 10 where the kernel allows it: root, CAP_SYS_NICE or an RLIMIT_RTPRIO of
at least 10; else 0) the bridge and the generator run their event loops in SCHED_RR at P (`--realtime-priority`), as
a telephony media server is deployed, and as the far ends would be on machines of their own: on a shared 2-core box
a normal-priority pacing thread waits behind the other processes. The load double runs at P / 2 (at least 1), below
them and above every normal process. A P the kernel would refuse stops the script. The column `rt prio b/g` says what
the bridge and the generator got.

It samples /proc/PID/stat (utime + stime) and /proc/PID/status (VmRSS) of the three processes: first the idle bridge
for 5 s, then every second of the steady-state window (after the ramp, when all N calls are up, until the first call
ends). CPU is in % of one core over that window; per-call figures subtract the idle bridge. From the bridge's GET
/metrics it reads, after the run, `callbridge_tx_schedule_resets_total`, `callbridge_tx_underruns_total` and
`callbridge_tx_late_frames_total`, and over the steady-state window the p99 of `callbridge_tx_tick_lateness_seconds`
(the bridge's own share of the jitter: how late its pacing ticks finished writing, as a bucket bound), and with --json
the same p99 with the late frames and schedule resets of each second of the window (`per_second`, with each
second's CPU of the three processes). Where it can read the scheduler's state (/sys/kernel/debug/sched/debug: root
with debugfs) it also watches the kernel's real-time budget (`sched_rt_runtime_us`): the `rt limit s` column counts
the seconds of the window in which some CPU ran out of it, so that its real-time threads, the pacing loops among them,
stood still for the rest of that second (`rt_limit` in `per_second`). Nothing is installed and nothing leaves the
machine.
"""
import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import re
import tempfile
import threading
import time
import urllib.request

# The public URL the bridge signs for (as behind a proxy); requests go to its loopback port.
PUBLIC_URL = "https://bridge.example.com"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu(pid):
    """CPU seconds used so far by a process, or None once it has exited."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_http(url, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("not answering: %s" % url)


def metric(exposition, name):
    for line in exposition.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def histogram(exposition, name):
    """The cumulative buckets of a histogram, {upper bound: count}."""
    buckets = {}
    for line in exposition.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_quantile(before, after, q):
    """The smallest bucket bound holding fraction q of what was recorded between two scrapes (None if nothing was)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    for bound, count in zip(bounds, counts):
        if count >= q * counts[-1]:
            return bound
    return bounds[-1]


def scrape(base):
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        return response.read().decode()


def stop(process, sig=signal.SIGINT, timeout=30, group=False):
    if process.poll() is None:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Window:
    """CPU and RSS of one process between two instants."""

    def __init__(self, pid):
        self.pid = pid
        self.cpu0 = cpu_seconds(pid)
        self.t0 = time.monotonic()
        self.rss = []

    def sample(self):
        self.rss.append(rss_kib(self.pid))

    def close(self):
        try:
            self.cpu = (cpu_seconds(self.pid) - self.cpu0) / (time.monotonic() - self.t0) * 100
        except OSError:
            self.cpu = None  # the process has already exited (the generator failed early)
        return self


class RealtimeBudget(threading.Thread):
    """Watches the kernel's real-time budget on each CPU (`sched_rt_runtime_us`, 950 ms of every second by default):
    a CPU whose real-time threads used it up runs none of them until the second is over, which stalls a pacing
    thread for up to 50 ms whatever its priority. Reads /sys/kernel/debug/sched/debug (root, debugfs mounted) every
    50 ms and keeps the instants at which some CPU was throttled or within 50 ms of its budget; `available` is False
    where the file cannot be read. (A normal thread: when real-time threads hold the CPUs it runs in the throttled
    windows, which are what it looks for.)"""

    PATH = "/sys/kernel/debug/sched/debug"
    PATTERN = re.compile(r"rt_rq\[(\d+)\]:/\n(?:\s+\.rt_nr_running\s+:\s+\d+\n)?\s+\.rt_throttled\s+:\s+(\d+)\n"
                         r"\s+\.rt_time\s+:\s+([\d.]+)\n\s+\.rt_runtime\s+:\s+([\d.]+)")

    def __init__(self):
        super().__init__(daemon=True)
        self.available = self.sample() is not None
        self.hits = []
        self.done = threading.Event()

    @classmethod
    def sample(cls):
        """Whether some CPU is at its real-time limit now; None if the scheduler's state cannot be read."""
        try:
            with open(cls.PATH) as handle:
                text = handle.read()
        except OSError:
            return None
        cpus = cls.PATTERN.findall(text)
        if not cpus:
            return None
        return any(int(throttled) or float(runtime) - float(used) < 50 for _, throttled, used, runtime in cpus)

    def run(self):
        while not self.done.wait(0.05):
            if self.sample():
                self.hits.append(time.monotonic())

    def limited(self, start, end):
        """Whether some CPU was at its real-time limit between the two instants (None if unknown)."""
        if not self.available:
            return None
        return any(start < hit <= end for hit in self.hits)


def run_one(args, calls):
    fixtures = os.path.join(ROOT, "Fixtures")
    agent_port, bridge_port = free_port(), free_port()
    token = "0123456789abcdef0123456789abcdef"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    agent = subprocess.Popen(
        [args.binary, "load-agent", "--port", str(agent_port), "--threads", str(args.agent_threads),
         "--tls-cert", os.path.join(fixtures, "tls", "localhost.pem"),
         "--tls-key", os.path.join(fixtures, "tls", "localhost.key"), "--stats-interval", "0", "--log-level", "warning",
         "--realtime-priority", str(agent_priority(args.realtime_priority))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if not agent.stdout.readline().startswith("listening"):
        raise SystemExit("the load agent did not start")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    env.update({"OPENAI_API_KEY": "sk-loadtest-dummy", "TWILIO_AUTH_TOKEN": token})
    base = "http://127.0.0.1:%d" % bridge_port
    bridge = subprocess.Popen(
        args.bridge_wrapper.split() + [args.binary, "run", "--host", "127.0.0.1", "--port", str(bridge_port), "--public-url", PUBLIC_URL,
         "--agent", "remote", "--realtime-url", "wss://localhost:%d/v1/realtime" % agent_port,
         "--realtime-ca-file", os.path.join(fixtures, "tls", "test-ca.pem"),
         "--call-log", os.devnull, "--log-level", "warning", "--log-format", "json",
         "--realtime-priority", str(args.realtime_priority)],
        env=env, start_new_session=True, **quiet)
    generator = None
    report_file = None
    try:
        wait_http(base + "/healthz", 60)
        time.sleep(2)
        idle = Window(bridge.pid)
        for _ in range(5):
            time.sleep(1)
            idle.sample()
        idle.close()
        report_file = tempfile.NamedTemporaryFile(prefix="callbridge-load-", suffix=".json", delete=False).name
        generator = subprocess.Popen(
            [args.binary, "load", "--calls", str(calls), "--ramp", str(args.ramp), "--duration", str(args.duration),
             "--threads", str(args.generator_threads), "--progress-interval", "5",
             "--audio", os.path.join(fixtures, "audio", "hello.wav"),
             "--barge-in-audio", os.path.join(fixtures, "audio", "interrupt.wav"),
             "--twilio-auth-token", token, "--webhook-url", base + "/twilio/voice",
             "--webhook-signed-url", PUBLIC_URL + "/twilio/voice", "--json", report_file,
             "--realtime-priority", str(args.realtime_priority),
             "ws://127.0.0.1:%d/twilio/media" % bridge_port],
            stdout=subprocess.DEVNULL, stderr=None if args.verbose else subprocess.DEVNULL)
        started = time.monotonic()
        # Steady state: every call is up from the end of the ramp until the first call ends.
        time.sleep(args.ramp + 2)
        windows = [Window(p.pid) for p in (bridge, generator, agent)]
        exposition = scrape(base)
        lateness_before = histogram(exposition, "callbridge_tx_tick_lateness_seconds")
        # Each second of the window, the bridge's own pacing figures over that second (JSON `per_second`): a run
        # that misses the jitter target shows whether it was a few bad seconds or the whole window. Calls publish
        # their counters about once a second, so a late frame may show in the next second's figure.
        per_second = []
        previous = (time.monotonic(), lateness_before, metric(exposition, "callbridge_tx_late_frames_total") or 0,
                    metric(exposition, "callbridge_tx_schedule_resets_total") or 0)
        budget = RealtimeBudget()
        if budget.available:
            budget.start()
        pids = {"bridge": bridge.pid, "generator": generator.pid, "agent": agent.pid}
        cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
        while time.monotonic() - started < args.duration - 1 and generator.poll() is None:
            time.sleep(1)
            cpu_now = {name: process_cpu(pid) for name, pid in pids.items()}
            for w in windows:
                if w.pid != generator.pid or generator.poll() is None:
                    w.sample()
            exposition = scrape(base)
            now = (time.monotonic(), histogram(exposition, "callbridge_tx_tick_lateness_seconds"),
                   metric(exposition, "callbridge_tx_late_frames_total") or 0,
                   metric(exposition, "callbridge_tx_schedule_resets_total") or 0)
            p99 = bucket_quantile(previous[1], now[1], 0.99)
            per_second.append({"t_s": round(now[0] - started, 1),
                               "tick_lateness_p99_ms": None if p99 is None else p99 * 1000,
                               "late_frames": now[2] - previous[2], "schedule_resets": now[3] - previous[3],
                               "rt_limit": budget.limited(previous[0], now[0]),
                               "cpu_pct": {name: None if cpu_now[name] is None or cpu_before[name] is None else
                                           round((cpu_now[name] - cpu_before[name]) / (now[0] - previous[0]) * 100, 1)
                                           for name in pids}})
            previous, cpu_before = now, cpu_now
        budget.done.set()
        for w in windows:
            w.close()
        lateness_after = histogram(scrape(base), "callbridge_tx_tick_lateness_seconds")
        load_average = os.getloadavg()[0]
        status = generator.wait()
        with open(report_file) as handle:
            report = json.load(handle)
        time.sleep(2)  # calls publish their last counters when they end
        exposition = scrape(base)
        resets = metric(exposition, "callbridge_tx_schedule_resets_total")
        underruns = metric(exposition, "callbridge_tx_underruns_total")
        late_frames = metric(exposition, "callbridge_tx_late_frames_total")
        bridge_priority = metric(exposition, "callbridge_realtime_priority")
    finally:
        if report_file is not None and os.path.exists(report_file):
            os.unlink(report_file)  # also when the run failed
        if generator is not None:
            stop(generator)
        stop(bridge, group=True)  # the whole group: a --bridge-wrapper may not pass the signal on
        stop(agent, signal.SIGTERM)
    b, g, a = windows
    rss = statistics.median(b.rss) if b.rss else 0
    idle_rss = statistics.median(idle.rss)
    calls_info = report["calls"]
    return {
        "calls": calls,
        "bridge_cpu_pct": b.cpu,
        "bridge_rss_mib": rss / 1024,
        "idle_cpu_pct": idle.cpu,
        "idle_rss_mib": idle_rss / 1024,
        "per_call_cpu_pct": (b.cpu - idle.cpu) / calls if b.cpu is not None else None,
        "per_call_rss_kib": (rss - idle_rss) / calls,
        "generator_cpu_pct": g.cpu,
        "agent_cpu_pct": a.cpu,
        "jitter_ms": report["jitter_ms"],
        "first_audio_ms": report["first_audio_ms"],
        "barge_in_ms": report["barge_in_ms"],
        "generator_tick_lateness_ms": report["generator_tick_lateness_ms"],
        "barge_ins_without_clear": report["barge_ins_without_clear"],
        "errors": report["errors"],
        "failures": report["failures"],
        "failed_to_connect": calls_info["failed_to_connect"],
        "disconnected": calls_info["disconnected"],
        "tx_schedule_resets": resets,
        "tx_underruns": underruns,
        "tx_late_frames": late_frames,
        "bridge_realtime_priority": bridge_priority,
        "generator_realtime_priority": report.get("generator_realtime_priority"),
        "tick_lateness_buckets": {("%g" % (b * 1000) if b != float("inf") else "inf"): lateness_after[b] - lateness_before.get(b, 0)
                                  for b in sorted(lateness_after)},
        "tick_lateness_p99_ms": (lambda v: None if v is None else v * 1000)(
            bucket_quantile(lateness_before, lateness_after, 0.99)),
        "per_second": per_second,
        "rt_limit_seconds": sum(1 for second in per_second if second["rt_limit"]) if budget.available else None,
        "load_average": load_average,
        "generator_exit": status,
        "window_s": args.duration - args.ramp - 3,
    }


def agent_priority(priority):
    """The double's real-time priority: half the bridge's and the generator's (at least 1), so it does not delay them,
    but above every normal process, so that it is not starved when they keep the cores busy (it stands in for a
    service with machines of its own). 0 when they run at normal scheduling."""
    return max(1, priority // 2) if priority > 0 else 0


def realtime_allowed(priority):
    """Whether this process may put threads in SCHED_RR at `priority`: root, CAP_SYS_NICE in its effective set, or
    an RLIMIT_RTPRIO at least that high (or unlimited)."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:") and int(line.split()[1], 16) & (1 << 23):  # CAP_SYS_NICE
                    return True
    except OSError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    return soft == resource.RLIM_INFINITY or soft >= priority


def fmt(value, digits=1):
    return "n/a" if value is None else ("%.*f" % (digits, value))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "callbridge"))
    parser.add_argument("--calls", default="10,100", help="comma-separated call counts, one run each")
    parser.add_argument("--duration", type=float, default=60, help="seconds each call lasts")
    parser.add_argument("--ramp", type=float, default=10, help="seconds over which the calls start")
    parser.add_argument("--generator-threads", type=int, default=1)
    parser.add_argument("--agent-threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--verbose", action="store_true", help="show the generator's progress")
    parser.add_argument("--realtime-priority", type=int, default=None,
                        help="SCHED_RR priority for the bridge's and the generator's event loops, 0: normal scheduling "
                             "(default: 10 where allowed, else 0)")
    parser.add_argument("--bridge-wrapper", default="",
                        help="run the bridge under this command, e.g. 'heaptrack -o /tmp/bridge' (figures then include it)")
    args = parser.parse_args()
    if args.duration < args.ramp + 8:
        raise SystemExit("--duration must be at least --ramp + 8 s, for a steady-state window")
    if args.realtime_priority is None:
        args.realtime_priority = 10 if realtime_allowed(10) else 0
    if not 0 <= args.realtime_priority <= 99:
        raise SystemExit("--realtime-priority must be 0…99")
    if args.realtime_priority and not realtime_allowed(args.realtime_priority):
        # Refused for the bridge and the generator, the double alone might get its lower priority and come first.
        raise SystemExit("--realtime-priority %d: not allowed here (needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO "
                         "of at least %d); use --realtime-priority 0" % (args.realtime_priority, args.realtime_priority))
    scheduling = ("bridge and generator event loops in SCHED_RR %d" % args.realtime_priority
                  if args.realtime_priority else "normal scheduling")
    rows = []
    for n in [int(x) for x in args.calls.split(",") if x.strip()]:
        print("loadtest: %d calls, ramp %g s, %g s each, %s ..." % (n, args.ramp, args.duration, scheduling),
              file=sys.stderr, flush=True)
        rows.append(run_one(args, n))
    header = ["N", "bridge CPU %", "bridge RSS MiB", "CPU %/call", "RSS KiB/call", "gen CPU %", "agent CPU %",
              "jitter p50/p99/max ms", "gen late p99 ms", "tick late p99 ms", "first audio p50/p99 ms", "barge-in p50/p99 ms", "errors/disc",
              "tx_resets", "underruns/late", "rt prio b/g", "rt limit s"]
    table = [header]
    for r in rows:
        j, f, b = r["jitter_ms"], r["first_audio_ms"], r["barge_in_ms"]
        table.append([
            str(r["calls"]), fmt(r["bridge_cpu_pct"]), fmt(r["bridge_rss_mib"]), fmt(r["per_call_cpu_pct"], 3),
            fmt(r["per_call_rss_kib"], 0), fmt(r["generator_cpu_pct"]), fmt(r["agent_cpu_pct"]),
            "%s/%s/%s" % (fmt(j["p50"], 2), fmt(j["p99"], 2), fmt(j["max"], 1)),
            fmt(r["generator_tick_lateness_ms"]["p99"], 1),
            ("≤" + fmt(r["tick_lateness_p99_ms"], 0)) if r["tick_lateness_p99_ms"] is not None else "n/a",
            "%s/%s" % (fmt(f["p50"], 0), fmt(f["p99"], 0)),
            "%s/%s" % (fmt(b["p50"], 0), fmt(b["p99"], 0)),
            "%d/%d" % (r["errors"], r["disconnected"]),
            fmt(r["tx_schedule_resets"], 0),
            "%s/%s" % (fmt(r["tx_underruns"], 0), fmt(r["tx_late_frames"], 0)),
            "%s/%s" % (fmt(r["bridge_realtime_priority"], 0), fmt(r["generator_realtime_priority"] or 0, 0)),
            "%d/%d" % (r["rt_limit_seconds"], len(r["per_second"])) if r["rt_limit_seconds"] is not None else "n/a",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        print("| " + " | ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in rows:
        for kind, count in sorted(r["failures"].items()):
            print("N=%d: %d × %s" % (r["calls"], count, kind))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    if any(r["generator_exit"] != 0 for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
