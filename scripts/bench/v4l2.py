"""The measuring and report parts of scripts/bench/v4l2.sh (run by it, on the host and inside the VM rig; never alone).

  v4l2.py host  OUT.json RUNS WARMUP WINDOW PATTERN...   the encode chain fed by videotestsrc under gst-launch-1.0,
                                                        and its source-only baseline, RUNS times each per pattern
  v4l2.py guest OUT_DIR BIN CYCLES WARMUP WINDOW         inside the VM: camhub streaming vivid (CPU window), hot-plug
                                                        cycles, then the same chain under gst-launch-1.0
  v4l2.py report EVIDENCE HOST.json GUEST.json META...   evidence/v4l2.json and evidence/v4l2.md

The module benchlib (written by scripts/bench/lib.sh) must be importable. Times inside one machine are
CLOCK_MONOTONIC (time.monotonic(), the clock `udevadm monitor` stamps events with); camhub's log lines (UTC wall
clock) are converted with the offset between the two clocks, taken once.
"""
import asyncio, datetime, fractions, json, os, re, signal, statistics, subprocess, sys, threading, time

from benchlib import TCK, alive, cpu_ticks, http_get, metric

signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def log(msg):
    print(f"v4l2.sh: {msg}", file=sys.stderr, flush=True)


# ---- what else runs: /proc samples ----

def proc_stat():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def all_ticks():
    """{pid: (comm, utime+stime)} of every process and kernel thread."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        rest = s.rsplit(")", 1)[1].split()
        out[int(d)] = (comm, int(rest[11]) + int(rest[12]))
    return out


class Window:
    """CPU of one process over a window, with the machine's load and the busiest other processes in it."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = time.monotonic()
        self.c0 = cpu_ticks(pid)
        self.s0 = proc_stat()
        self.a0 = all_ticks()
        self.load0 = os.getloadavg()[0]

    def end(self):
        t1, c1, s1, a1 = time.monotonic(), cpu_ticks(self.pid), proc_stat(), all_ticks()
        wall = t1 - self.t0
        others = {}
        for pid, (comm, ticks) in a1.items():
            if pid == self.pid or pid not in self.a0 or self.a0[pid][0] != comm:
                continue
            d = ticks - self.a0[pid][1]
            if d > 0:
                others[comm] = others.get(comm, 0) + d
        ncpu = os.cpu_count() or 1
        busy = (s1[0] - self.s0[0]) / max(s1[1] - self.s0[1], 1) * 100 * ncpu  # % of one core, all cores summed
        top = sorted(others.items(), key=lambda kv: -kv[1])[:6]
        own = 100 * (c1 - self.c0) / TCK / wall
        seen = own + sum(100 * t / TCK / wall for t in others.values())
        return {
            "seconds": round(wall, 2),
            "cpu_percent": round(100 * (c1 - self.c0) / TCK / wall, 2),
            "cpu_seconds": round((c1 - self.c0) / TCK, 2),
            "machine_busy_percent_of_one_core": round(busy, 1),
            "machine_cores": ncpu,
            "loadavg_before": round(self.load0, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
            "busiest_others": [{"comm": c, "cpu_percent": round(100 * t / TCK / wall, 1)} for c, t in top],
            # Busy time no process present at both ends accounts for (short-lived ones: compilers, tests...).
            # /proc/stat is sampled at the tick while per-process times are exact, so this is approximate.
            "unattributed_percent": round(max(busy - seen, 0.0), 1),
        }


# ---- gst-launch-1.0 under measurement ----

FPS_LINE = re.compile(r"last-message = rendered: (\d+), dropped: (\d+)")


def fps_sink():
    """The sink both chains end in: fpsdisplaysink around a fakesink, not synchronised to the clock (as camhub's
    appsink), printing how many buffers it got once a second."""
    return ["fpsdisplaysink", "text-overlay=false", "sync=false", "signal-fps-measurements=false",
            "fps-update-interval=1000", "video-sink=fakesink enable-last-sample=false"]


def encode_chain(gst_format, width, height, fraction, bitrate, gop):
    """What src/media/v4l2_ingest.rs builds for a raw mode (appsink replaced by fps_sink)."""
    return ["!", f"video/x-raw,format={gst_format},width={width},height={height},framerate={fraction}",
            "!", "queue", "max-size-buffers=2", "max-size-bytes=0", "max-size-time=0", "leaky=downstream",
            "!", "videoconvert", "!", "video/x-raw,format=I420",
            "!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast", f"bitrate={bitrate}", f"key-int-max={gop}",
            "!", "video/x-h264,profile=constrained-baseline",
            "!", "h264parse", "config-interval=-1", "!", "video/x-h264,stream-format=avc,alignment=au",
            "!", *fps_sink()]


def auto_bitrate_kbps(width, height, fps):
    """src/media/v4l2_ingest.rs auto_bitrate_kbps: about 0.1 bit per pixel, within 200..8000 kbit/s."""
    return min(max(int(width * height * max(fps, 1.0) * 0.1 / 1000.0), 200), 8000)


def gst_window(label, elements, warmup, window):
    """Runs `gst-launch-1.0 -v ELEMENTS`, measures its CPU over `window` seconds after `warmup`, and the rate at which
    buffers reached the sink (from fpsdisplaysink's messages); stops it."""
    cmd = ["gst-launch-1.0", "-v", *elements]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marks, tail = [], []

    def reader():
        for line in p.stdout:
            m = FPS_LINE.search(line)
            if m:
                marks.append((time.monotonic(), int(m.group(1)), int(m.group(2))))
            elif "caps = " not in line:
                tail.append(line.rstrip())
                del tail[:-20]

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        time.sleep(warmup)
        if p.poll() is not None:
            raise RuntimeError(f"{label}: gst-launch-1.0 exited with {p.returncode}: " + " | ".join(tail[-5:]))
        w = Window(p.pid)
        time.sleep(window)
        if p.poll() is not None:
            raise RuntimeError(f"{label}: gst-launch-1.0 exited with {p.returncode} during the window")
        r = w.end()
        t0, t1 = w.t0, w.t0 + r["seconds"]
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        th.join(5)
    # Buffers in the window: between the last message before its start and the last before its end.
    before = [m for m in marks if m[0] <= t0]
    inside = [m for m in marks if m[0] <= t1]
    if before and inside and inside[-1][0] > before[-1][0]:
        a, b = before[-1], inside[-1]
        r["fps"] = round((b[1] - a[1]) / (b[0] - a[0]), 2)
        r["sink_dropped"] = b[2] - a[2]
    else:
        r["fps"] = None
        r["sink_dropped"] = None
    r["cpu_ms_per_frame"] = round(10 * r["cpu_percent"] / r["fps"], 2) if r["fps"] else None
    r["label"] = label
    r["command"] = "gst-launch-1.0 " + " ".join(e if " " not in e else f'"{e}"' for e in elements)
    log(f"{label}: {r['cpu_percent']:.1f} % of one core at {r['fps']} fps over {r['seconds']:.0f} s "
        f"(machine busy {r['machine_busy_percent_of_one_core']:.0f} % of one core, load {r['loadavg_after']:.2f})")
    return r


# ---- host: the realistic cost of encoding one 640x480@30 raw camera ----

def host(out, runs, warmup, window, patterns):
    w, h, fps = 640, 480, 30
    bitrate, gop = auto_bitrate_kbps(w, h, fps), fps
    res = {"width": w, "height": h, "fps": fps, "format": "YUY2", "bitrate_kbps": bitrate, "gop": gop,
           "runs": runs, "warmup_seconds": warmup, "window_seconds": window, "patterns": {}}
    for pattern in patterns:
        src = ["videotestsrc", "is-live=true", f"pattern={pattern}"]
        caps = f"video/x-raw,format=YUY2,width={w},height={h},framerate={fps}/1"
        enc, base = [], []
        for i in range(runs):
            # Baseline and encode alternate, so that a change in the machine's load hits both alike.
            base.append(gst_window(f"host {pattern} source only, run {i + 1}/{runs}",
                                   [*src, "!", caps, "!", *fps_sink()], warmup, window))
            enc.append(gst_window(f"host {pattern} encode, run {i + 1}/{runs}",
                                  [*src, *encode_chain("YUY2", w, h, f"{fps}/1", bitrate, gop)], warmup, window))
        diffs = [e["cpu_percent"] - b["cpu_percent"] for e, b in zip(enc, base)]
        res["patterns"][pattern] = {
            "encode": enc, "baseline": base,
            "encode_cpu_percent_median": round(statistics.median(e["cpu_percent"] for e in enc), 2),
            "baseline_cpu_percent_median": round(statistics.median(b["cpu_percent"] for b in base), 2),
            "encode_minus_baseline_per_run": [round(d, 2) for d in diffs],
            "encode_minus_baseline_median": round(statistics.median(diffs), 2),
            "encode_fps_median": statistics.median(e["fps"] or 0 for e in enc),
        }
        log(f"host {pattern}: encoding costs {res['patterns'][pattern]['encode_minus_baseline_median']:.1f} % of one "
            f"core (median of {runs} runs: {', '.join(f'{d:.1f}' for d in diffs)})")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)


# ---- guest: camhub and vivid in the VM ----

V4L2_TO_GST = {"YUYV": "YUY2", "UYVY": "UYVY", "YVYU": "YVYU", "NV12": "NV12", "NV21": "NV21", "NV16": "NV16",
               "YU12": "I420", "YV12": "YV12", "422P": "Y42B", "GREY": "GRAY8", "RGB3": "RGB", "BGR3": "BGR",
               "RGBP": "RGB16", "XR24": "BGRx", "BX24": "BGRx", "AR24": "BGRA", "BA24": "BGRA"}
UNBIND, BIND = "/sys/bus/platform/drivers/vivid/unbind", "/sys/bus/platform/drivers/vivid/bind"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\w+)\s+(.*)$")
UDEV_LINE = re.compile(r"^(KERNEL|UDEV)\s*\[(\d+\.\d+)\]\s+(\w+)\s+(\S+)\s+\((\S+)\)")


class Rpc:
    """One WebSocket: responses matched to requests by id; notifications kept with the monotonic time they arrived."""

    def __init__(self, ws):
        self.ws, self.next_id, self.pending, self.notes = ws, 1, {}, []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self.read())

    async def read(self):
        async for text in self.ws:
            at = time.monotonic()
            m = json.loads(text)
            if "id" in m and m["id"] in self.pending:
                self.pending.pop(m["id"]).set_result(m)
            elif "method" in m:
                self.notes.append((at, m))
                self.changed.set()

    async def call(self, method, params, timeout=30):
        i = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
        r = await asyncio.wait_for(fut, timeout)
        if "error" in r:
            raise RuntimeError(f"{method}: {r['error']}")
        return r["result"]

    async def wait_status(self, device, status, since, timeout):
        """The time of the first camera_status_update of `device` to `status` that arrived at or after `since`."""
        deadline = time.monotonic() + timeout
        while True:
            for at, m in self.notes:
                p = m.get("params") or {}
                if (at >= since and m["method"] == "camera_status_update" and p.get("device") == device
                        and p.get("status") == status):
                    return at
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def reason(self, device, status, since):
        """data.reason of the first camera.status_change event of `device` to `status` after `since`."""
        for at, m in self.notes:
            p = m.get("params") or {}
            d = p.get("data") or {}
            if (at >= since and m["method"] == "event" and p.get("topic") == "camera.status_change"
                    and p.get("device") == device and d.get("status") == status):
                return d.get("reason")
        return None


def sysfs_write(path):
    t0 = time.monotonic()
    with open(path, "w") as f:
        f.write("vivid.0")
    return t0, time.monotonic()


def video_fds(pid):
    """Where process pid's open file descriptors on V4L2 nodes point (`/dev/video0 (deleted)` once unplugged)."""
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/video"):
            out.append(target)
    return out


def capture_node():
    """/dev/videoN of vivid's video capture node (its sysfs name is vivid-000-vid-cap)."""
    for d in sorted(os.listdir("/sys/class/video4linux")):
        try:
            with open(f"/sys/class/video4linux/{d}/name") as f:
                if f.read().strip().endswith("-vid-cap"):
                    return d
        except OSError:
            pass
    raise RuntimeError("no vivid video capture node in /sys/class/video4linux")


async def guest_camhub(pid, port, token, cycles, warmup, window, gap, settle, res):
    import websockets
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        rpc = Rpc(ws)
        r = await rpc.call("authenticate", {"auth_token": token})
        if not r.get("authenticated"):
            raise RuntimeError(f"authenticate: {r}")
        await rpc.call("subscribe_events", {"topics": ["camera.status_change"]})
        # The vivid camera, connected.
        t_start = res["camhub_started_mono"]
        cam, status = None, None
        while True:
            if not alive(pid):
                raise RuntimeError("camhub exited")
            for c in (await rpc.call("get_camera_list", {}))["cameras"]:
                s = await rpc.call("get_camera_status", {"device": c["device"]})
                if s.get("source_type") == "v4l2" and s.get("name") == "vivid":
                    cam, status = c["device"], s
            if status and status["status"] == "CONNECTED":
                break
            if time.monotonic() - t_start > 180:
                raise RuntimeError(f"vivid camera not connected 180 s after camhub started: {status}")
            await asyncio.sleep(0.5)
        res["camera"] = cam
        res["start_to_connected_s"] = round(time.monotonic() - t_start, 2)
        log(f"{cam} (vivid) CONNECTED {res['start_to_connected_s']} s after camhub started; mode {status['mode']}")

        # (a) camhub's CPU while streaming.
        await asyncio.sleep(warmup)
        f0 = metric(http_get(port, "/metrics"), "camhub_camera_frames_total").get(cam, 0)
        w = Window(pid)
        await asyncio.sleep(window)
        cpu = w.end()
        f1 = metric(http_get(port, "/metrics"), "camhub_camera_frames_total").get(cam, 0)
        status = await rpc.call("get_camera_status", {"device": cam})
        cpu["fps"] = round((f1 - f0) / cpu["seconds"], 2)
        cpu["frames"] = f1 - f0
        cpu["cpu_ms_per_frame"] = round(10 * cpu["cpu_percent"] / cpu["fps"], 2) if cpu["fps"] else None
        cpu["status_after"] = {k: status.get(k) for k in ("status", "resolution", "fps", "mode")}
        res["camhub_cpu"] = cpu
        log(f"camhub: {cpu['cpu_percent']:.1f} % of the vCPU at {cpu['fps']} fps (get_camera_status.fps "
            f"{status.get('fps')}), VM busy {cpu['machine_busy_percent_of_one_core']:.0f} %; busiest others "
            + ", ".join(f"{o['comm']} {o['cpu_percent']}" for o in cpu["busiest_others"][:3]))

        # (b) hot-plug cycles.
        res["camhub_video_fds_before_cycles"] = video_fds(pid)
        res["cycles"] = []
        for i in range(cycles):
            c = {"cycle": i + 1}
            node = capture_node()  # vivid's capture node is renumbered when its old number is still held
            t0, t1 = await asyncio.to_thread(sysfs_write, UNBIND)
            at = await rpc.wait_status(cam, "DISCONNECTED", t0, 30)
            c["unplug"] = {"node": node, "t_write": t0, "write_s": t1 - t0, "t_notified": at}
            if at is None:
                raise RuntimeError(f"cycle {i + 1}: no DISCONNECTED within 30 s of the unbind")
            await asyncio.sleep(gap)
            t0, t1 = await asyncio.to_thread(sysfs_write, BIND)
            at = await rpc.wait_status(cam, "CONNECTED", t0, 120)
            if at is None:
                raise RuntimeError(f"cycle {i + 1}: no CONNECTED within 120 s of the bind")
            c["plug"] = {"node": capture_node(), "t_write": t0, "write_s": t1 - t0, "t_notified": at}
            log(f"cycle {i + 1}/{cycles}: unbind -> DISCONNECTED {1000 * (c['unplug']['t_notified'] - c['unplug']['t_write']):.0f} ms, "
                f"bind -> CONNECTED {1000 * (at - c['plug']['t_write']):.0f} ms")
            res["cycles"].append(c)
            await asyncio.sleep(settle)
        for c in res["cycles"]:  # camera.status_change follows the camera_status_update of the same change
            c["unplug"]["reason"] = rpc.reason(cam, "DISCONNECTED", c["unplug"]["t_write"])
        status = await rpc.call("get_camera_status", {"device": cam})
        res["status_after_cycles"] = {k: status.get(k) for k in ("status", "resolution", "fps", "mode")}
        res["camhub_video_fds_after_cycles"] = video_fds(pid)
        log(f"camhub's fds on /dev/video*: {res['camhub_video_fds_before_cycles']} before the cycles, "
            f"{res['camhub_video_fds_after_cycles']} after")
        rpc.task.cancel()
    return status


def wall_to_mono():
    a, b, c = time.time(), time.monotonic(), time.time()
    return (a + c) / 2 - b


def split_cycles(res, udev_path, camhub_log, cam, offset):
    """Puts the kernel's uevents (as `udevadm monitor` received them), udevd's processed events and camhub's log lines
    on each cycle's timeline, as milliseconds from the sysfs write."""
    events = []
    try:
        with open(udev_path) as f:
            for line in f:
                m = UDEV_LINE.match(line)
                if m:
                    events.append((float(m.group(2)), m.group(1), m.group(3), m.group(4)))
    except OSError:
        pass
    lines = []
    with open(camhub_log) as f:
        for line in f:
            m = LOG_LINE.match(line)
            if m and re.search(rf"camera_id={re.escape(cam)}\b", m.group(3)):
                t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
                lines.append((t - offset, m.group(3)))
    actions = []
    for c in res["cycles"]:
        actions += [(c["unplug"]["t_write"], c["unplug"], "remove"), (c["plug"]["t_write"], c["plug"], "add")]
    actions.sort(key=lambda a: a[0])
    for k, (t0, d, action) in enumerate(actions):
        t_next = actions[k + 1][0] if k + 1 < len(actions) else float("inf")

        def first_event(source, any_node=False):
            for t, src, act, path in events:
                if t0 - 0.01 <= t < t_next and src == source and act == action and (
                        any_node or path.endswith("/" + d["node"])):
                    return round(1000 * (t - t0), 1)
            return None

        def first_log(text):
            for t, msg in lines:
                if t0 - 0.01 <= t < t_next and text in msg:
                    return round(1000 * (t - t0), 1)
            return None

        d["ms"] = {
            "write_returned": round(1000 * d["write_s"], 1),
            "kernel_uevent_first_video4linux": first_event("KERNEL", True),
            "kernel_uevent_capture_node": first_event("KERNEL"),
            "udev_event_capture_node": first_event("UDEV"),
            "notification": round(1000 * (d["t_notified"] - t0), 1),
        }
        if action == "remove":
            d["ms"]["camhub_log_device_unplugged"] = first_log("device unplugged")
        else:
            d["ms"]["camhub_log_device_plugged_back_in"] = first_log("device plugged back in")
            d["ms"]["camhub_log_streaming_device"] = first_log("streaming device")
            d["ms"]["camhub_log_connected"] = first_log("connected after_ms")


def guest(out, bin_path, cycles, warmup, window):
    cycles, warmup, window = int(cycles), float(warmup), float(window)
    data = "/tmp/camhub-v4l2-bench"
    os.makedirs(data, exist_ok=True)
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = os.path.join(data, "camhub.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\nshutdown_grace_ms = 5000\n'
                f'[auth]\njwt_secret = "v4l2-bench-secret-0123456789abcdef"\n'
                f'[storage]\nroot = "{data}"\nmin_free_mb = 16\n'
                '[v4l2]\nmax_width = 640\nmax_height = 480\nmax_fps = 30\n'
                '[monitor]\nconnect_timeout_ms = 30000\nstall_timeout_ms = 6000\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CAMHUB_BIN", "CAMHUB_CONFIG")}
    env["NO_COLOR"] = "1"
    token = subprocess.run([bin_path, "token", "--role", "operator", "--ttl", "86400", "--user", "v4l2-bench",
                            "--config", cfg], env={**env, "RUST_LOG": "warn"}, capture_output=True, text=True,
                           check=True).stdout.strip()
    node = capture_node()
    res = {"vm": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                  "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                     if l.startswith("model name")), "")},
           "capture_node": f"/dev/{node}", "cycles_asked": cycles, "warmup_seconds": warmup,
           "window_seconds": window}
    udev_path = os.path.join(out, "udev-monitor.txt")
    udev = subprocess.Popen(["stdbuf", "-oL", "udevadm", "monitor", "--kernel", "--udev",
                             "--subsystem-match=video4linux"], stdout=open(udev_path, "w"),
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    camhub_log = os.path.join(out, "camhub.log")
    res["camhub_started_mono"] = time.monotonic()
    camhub = subprocess.Popen([bin_path, "run", "--config", cfg], env={**env, "RUST_LOG": "info"},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(camhub_log, "w"))
    try:
        for _ in range(600):
            try:
                http_get(port, "/health/ready")
                break
            except OSError:
                pass
            if camhub.poll() is not None:
                raise RuntimeError(f"camhub exited with {camhub.returncode}")
            time.sleep(0.1)
        status = asyncio.run(guest_camhub(camhub.pid, port, token, cycles, warmup, window, 2.0, 3.0, res))
    finally:
        if camhub.poll() is None:
            camhub.terminate()
            try:
                camhub.wait(20)
            except subprocess.TimeoutExpired:
                camhub.kill()
                camhub.wait()
        udev.terminate()
        udev.wait(5)
    split_cycles(res, udev_path, camhub_log, res.get("camera", "?"), wall_to_mono())
    res["capture_node_after_cycles"] = node = capture_node()

    # The same chain under gst-launch-1.0, in the mode camhub streamed.
    mode = status["mode"]
    w, h = (int(x) for x in mode["resolution"].split("x"))
    fps = float(mode["fps"])
    gst_format = V4L2_TO_GST.get(mode["format"])
    if gst_format is None or mode.get("encoding") != "encoded":
        raise RuntimeError(f"camhub streams {mode}: not a raw mode this benchmark mirrors")
    fraction = fractions.Fraction(fps).limit_denominator(1001)
    bitrate, gop = auto_bitrate_kbps(w, h, fps), round(fps) if fps >= 1 else 30
    src = ["v4l2src", f"device=/dev/{node}"]
    caps = f"video/x-raw,format={gst_format},width={w},height={h},framerate={fraction.numerator}/{fraction.denominator}"
    res["gst_encode"] = gst_window("VM gst-launch encode", [*src, *encode_chain(
        gst_format, w, h, f"{fraction.numerator}/{fraction.denominator}", bitrate, gop)], warmup, window)
    res["gst_capture"] = gst_window("VM gst-launch capture only", [*src, "!", caps, "!", *fps_sink()], warmup, window)
    res["mirrored"] = {"gst_format": gst_format, "bitrate_kbps": bitrate, "gop": gop}
    try:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "fdcheck", f"/dev/{node}", caps],
                           capture_output=True, text=True, timeout=60)
        res["plain_gstreamer_fd_check"] = json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        res["plain_gstreamer_fd_check"] = {"error": str(e)}
    with open(os.path.join(out, "guest.json"), "w") as f:
        json.dump(res, f, indent=2)
    log("guest measurements written")


def fdcheck(node, caps):
    """In a fresh process: a plain GStreamer pipeline `v4l2src ! CAPS ! fakesink` (Python gi) played for 3 s, set to
    NULL and released; prints this process's descriptors on /dev/video* while playing and afterwards."""
    import gc
    import gi
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
    Gst.init(None)
    p = Gst.parse_launch(f"v4l2src device={node} ! {caps} ! fakesink")
    p.set_state(Gst.State.PLAYING)
    time.sleep(3)
    out = {"gstreamer": Gst.version_string(), "playing": video_fds(os.getpid())}
    p.set_state(Gst.State.NULL)
    p.get_state(Gst.CLOCK_TIME_NONE)
    out["pipeline_refcount_at_release"] = p.__grefcount__
    del p
    gc.collect()
    time.sleep(1)
    out["after_null_and_release"] = video_fds(os.getpid())
    print(json.dumps(out))


# ---- the report ----

def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"count": 0, "median": None, "min": None, "max": None}
    return {"count": len(xs), "median": round(statistics.median(xs), 1), "min": round(min(xs), 1),
            "max": round(max(xs), 1)}


def report(evidence, host_json, guest_json, commit, version, build_s, script_s):
    from benchlib import run_meta, write_json, write_markdown
    hst, g = json.load(open(host_json)), json.load(open(guest_json))
    meta = run_meta("v4l2", commit, version, 640, 480, 30, 30, 921)
    meta.pop("stream")
    meta["build_release_seconds"] = build_s
    meta["script_seconds"] = script_s
    cyc = g["cycles"]
    unplug = {k: stats(c["unplug"]["ms"].get(k) for c in cyc) for k in cyc[0]["unplug"]["ms"]}
    plug = {k: stats(c["plug"]["ms"].get(k) for c in cyc) for k in cyc[0]["plug"]["ms"]}
    reasons = sorted({str(c["unplug"].get("reason")) for c in cyc})
    slow_unplugs = [c["unplug"]["ms"]["notification"] for c in cyc if c["unplug"]["ms"]["notification"] > 1000]
    cam, enc, cap = g["camhub_cpu"], g["gst_encode"], g["gst_capture"]

    def med_diff(direction, a, b):
        xs = [c[direction]["ms"][b] - c[direction]["ms"][a] for c in cyc
              if c[direction]["ms"].get(a) is not None and c[direction]["ms"].get(b) is not None]
        return statistics.median(xs) if xs else None

    udev_part = med_diff("plug", "kernel_uevent_capture_node", "udev_event_capture_node")
    camhub_part = med_diff("plug", "udev_event_capture_node", "notification")
    before = lambda k: sum(1 for c in cyc if c["unplug"]["ms"].get(k) is not None
                           and c["unplug"]["ms"]["notification"] < c["unplug"]["ms"][k])
    early, early_log = before("udev_event_capture_node"), before("camhub_log_device_unplugged")
    ratio = round(cam["cpu_percent"] / enc["cpu_percent"], 2) if enc["cpu_percent"] else None
    ratio_frame = (round(cam["cpu_ms_per_frame"] / enc["cpu_ms_per_frame"], 2)
                   if cam.get("cpu_ms_per_frame") and enc.get("cpu_ms_per_frame") else None)
    result = {**meta, "vm": g["vm"], "hotplug": {"cycles": len(cyc), "unplug_ms": unplug, "plug_ms": plug,
                                                 "unplug_reasons": reasons, "per_cycle": cyc},
              "vm_cpu": {"camhub": cam, "gst_launch_encode": enc, "gst_launch_capture_only": cap,
                         "camhub_over_gst_launch_cpu_percent": ratio,
                         "camhub_over_gst_launch_cpu_per_frame": ratio_frame, "mirrored": g["mirrored"]},
              "vm_start_to_connected_s": g["start_to_connected_s"], "host_encode": hst}
    write_json(os.path.join(evidence, "v4l2.json"), result)

    f1 = lambda v: "-" if v is None else f"{v:.1f}"
    f2 = lambda v: "-" if v is None else f"{v:.2f}"
    row = lambda name, s: f"| {name} | {f1(s['median'])} | {f1(s['min'])} | {f1(s['max'])} |"
    mode = cam["status_after"]["mode"]
    others = lambda r: ", ".join(
        [f"{o['comm']} {o['cpu_percent']:.1f} %" for o in r["busiest_others"][:4] if o["cpu_percent"] >= 0.5]
        + ([f"short-lived processes ~{r['unattributed_percent']:.0f} %"] if r.get("unattributed_percent", 0) >= 5
           else [])) or "none above 0.5 %"
    lines = [
        "# camhub local (V4L2) cameras: hot-plug latency and encoding CPU",
        "",
        run_line_v4l2(meta),
        "",
        (f"Release build (`cargo build --release --bin camhub`, on the host; the guest cannot build): {build_s} s "
         "in this run." if build_s != "skipped" else
         "Release build skipped (CAMHUB_BIN given).") + f" The whole script took {script_s} s.",
        "",
        "## 1. Hot-plug: sysfs write to the `camera_status_update` notification (VM)",
        "",
        f"Inside the VM rig (`scripts/vm/run.sh`: Debian kernel {g['vm']['kernel']} under qemu **TCG**, i.e. an "
        f"emulated CPU ({g['vm']['cpu_model']}), {g['vm']['nproc']} vCPU, vivid, real systemd-udevd). "
        f"`camhub run` streams vivid ({g['camera']}, {g['capture_node']}) in {mode['format']} {mode['resolution']} at "
        f"{mode['fps']} fps, encoded; a WebSocket client (operator token, subscribed to `camera.status_change` for the "
        f"reason) waits for notifications while the script writes `vivid.0` to "
        f"`/sys/bus/platform/drivers/vivid/unbind`, waits for DISCONNECTED, 2 s, writes `bind`, waits for CONNECTED, "
        f"3 s. {len(cyc)} cycles. Times are milliseconds from the start of the sysfs write, all on the guest's "
        "CLOCK_MONOTONIC: the kernel's uevent and udevd's event as `udevadm monitor --kernel --udev` received them "
        "(for the capture node), camhub's log lines (converted from its UTC timestamps), and the notification as the "
        "client received it. **Everything runs on one emulated CPU, so these are upper bounds**: the kernel and "
        "udevd part (device teardown and creation, udev rules) and the probe (thousands of ioctls) are what the "
        "emulation slows most.",
        "",
        "Unplug (`unbind`) to DISCONNECTED:",
        "",
        "| step (ms from the write) | median | min | max |",
        "|---|---:|---:|---:|",
        row("the write returned", unplug["write_returned"]),
        row("kernel uevent `remove` (capture node)", unplug["kernel_uevent_capture_node"]),
        row("udevd's event (capture node)", unplug["udev_event_capture_node"]),
        row("camhub log `device unplugged`", unplug["camhub_log_device_unplugged"]),
        row("**DISCONNECTED notification at the client**", unplug["notification"]),
        "",
        "The notification does not wait for udev when the stream breaks first: "
        f"it arrived before udevd's event (as udevadm received it) in {early} of {len(cyc)} cycles, and before "
        f"camhub's `device unplugged` line in {early_log}. "
        + (f"**DISCONNECTED took over 1 s in {len(slow_unplugs)} of {len(cyc)} cycles** "
           f"({', '.join(f'{v:.0f}' for v in slow_unplugs)} ms)." if slow_unplugs
           else f"DISCONNECTED came within 1 s in all {len(cyc)} cycles."),
        "",
        "Plug (`bind`) to CONNECTED (includes reopening and probing the device, choosing the mode, starting the "
        "pipeline and the first encoded frame):",
        "",
        "| step (ms from the write) | median | min | max |",
        "|---|---:|---:|---:|",
        row("the write returned (the driver's probe, devices created)", plug["write_returned"]),
        row("kernel uevent `add` (capture node)", plug["kernel_uevent_capture_node"]),
        row("udevd's event (capture node)", plug["udev_event_capture_node"]),
        row("camhub log `device plugged back in` (camera visible: discovery probed the node, matched its "
            "identity)", plug["camhub_log_device_plugged_back_in"]),
        row("camhub log `streaming device` (mode chosen from discovery's probe, pipeline starts)",
            plug["camhub_log_streaming_device"]),
        row("camhub log `connected` (first encoded frame in the hub)", plug["camhub_log_connected"]),
        row("**CONNECTED notification at the client**", plug["notification"]),
        "",
        f"Of the median {f1(plug['notification']['median'])} ms, the kernel's uevent to udevd's event (udev rules, "
        f"under emulation) is {f1(udev_part)} ms, and udevd's event to the notification (camhub: discovery's probe, "
        f"pipeline start, first encoded frame) {f1(camhub_part)} ms (medians of the "
        "per-cycle differences). udevadm is one more listener of udevd's broadcast; camhub may receive it first.",
        "",
        "A local camera stays listed (DISCONNECTED) while unplugged, so \"visible\" here is the moment camhub has "
        "the device back under the camera's id; the API shows it as CONNECTED at the notification. "
        f"From `camhub run` to the vivid camera CONNECTED at start: {g['start_to_connected_s']} s.",
        "",
        "Per cycle (ms): " + "; ".join(
            f"{c['cycle']}: unplug {c['unplug']['ms']['notification']:.0f}, plug {c['plug']['ms']['notification']:.0f}"
            for c in cyc) + ".",
        "",
        "## 2. CPU per encoded 640x480 raw camera",
        "",
        "### (a) In the VM (emulated CPU: compare, do not read absolute numbers)",
        "",
        f"{g['window_seconds']:.0f} s windows after {g['warmup_seconds']:.0f} s warm-up; CPU = utime+stime from "
        "/proc/PID/stat as % of the one vCPU; fps = frames that reached the end of the chain "
        "(camhub: `camhub_camera_frames_total`; gst-launch: fpsdisplaysink's count). gst-launch runs the chain "
        "`media::v4l2_ingest` builds, in the same mode and settings "
        f"({g['mirrored']['gst_format']}, x264 ultrafast zerolatency, {g['mirrored']['bitrate_kbps']} kbit/s, "
        f"key-int-max {g['mirrored']['gop']}, constrained baseline, h264parse to avc/au), ending in a fakesink that "
        "does not sync instead of the appsink; camhub ran alone, then each gst-launch alone.",
        "",
        "| process | CPU % of the vCPU | fps | CPU ms per frame | VM busy % | busiest other processes (% of the vCPU) |",
        "|---|---:|---:|---:|---:|---|",
        f"| camhub (`get_camera_status.mode` {mode['format']} {mode['resolution']} @ {mode['fps']}, measured "
        f"{cam['status_after']['fps']} fps) | {f1(cam['cpu_percent'])} | {f2(cam['fps'])} | "
        f"{f1(cam['cpu_ms_per_frame'])} | {cam['machine_busy_percent_of_one_core']:.0f} | {others(cam)} |",
        f"| gst-launch, same encode chain | {f1(enc['cpu_percent'])} | {f2(enc['fps'])} | "
        f"{f1(enc['cpu_ms_per_frame'])} | {enc['machine_busy_percent_of_one_core']:.0f} | {others(enc)} |",
        f"| gst-launch, `v4l2src ! fakesink` (capture only) | {f1(cap['cpu_percent'])} | {f2(cap['fps'])} | "
        f"{f1(cap['cpu_ms_per_frame'])} | {cap['machine_busy_percent_of_one_core']:.0f} | {others(cap)} |",
        "",
        f"**camhub / gst-launch: {f2(ratio)} in CPU %, {f2(ratio_frame)} in CPU per frame.** vivid's nominal "
        f"{mode['fps']} fps is what it is asked for; under TCG it delivers the fps above (vivid draws its frames "
        "in a kernel thread, which is not in either process's figure). \"VM busy\" comes from /proc/stat, sampled "
        "at the timer tick, while per-process figures are exact: work that runs just after each tick (vivid's "
        "frame timer) is undercounted there, hence a capture-only total below its parts.",
        "",
        f"Encode command: `{enc['command']}`",
        "",
        f"Capture-only command: `{cap['command']}`",
        "",
        "### (b) On the host (real CPU): the absolute cost of encoding one 640x480@30 raw camera",
        "",
        f"The same encode chain under gst-launch, fed by `videotestsrc is-live=true` in YUY2 (YUYV, as a webcam "
        f"sends) 640x480 at 30 fps, {hst['bitrate_kbps']} kbit/s (camhub's automatic bitrate for this mode), "
        f"key-int-max {hst['gop']}; minus the same source into the same sink without encoding. {hst['runs']} runs "
        f"of each per pattern, alternating, {hst['window_seconds']:.0f} s windows after {hst['warmup_seconds']:.0f} s "
        "warm-up; % of one core (x264 may use both cores; their sum is counted).",
        "",
        "| picture | encode chain CPU % (median) | source only CPU % (median) | **encoding, median of per-run "
        "differences** | per-run differences | encode fps (median) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for pattern, p in hst["patterns"].items():
        lines.append(
            f"| {pattern} | {f1(p['encode_cpu_percent_median'])} | {f1(p['baseline_cpu_percent_median'])} | "
            f"**{f1(p['encode_minus_baseline_median'])}** | "
            f"{', '.join(f'{d:.1f}' for d in p['encode_minus_baseline_per_run'])} | {f1(p['encode_fps_median'])} |")
    lines += [
        "",
        "smpte is a still picture (x264 codes the P-frames almost for free), as a webcam looking at a still scene "
        "is; snow is noise in every pixel, the worst case (a real sensor's noise lies in between).",
        "",
        "The host is shared (2 cores; other engineers compile and run VMs at the same time). What else ran during "
        "each host window (machine busy = all processes, % of one core, summed over both cores):",
        "",
        "| window | CPU % | fps | machine busy % | load before / after | busiest other processes |",
        "|---|---:|---:|---:|---|---|",
    ]
    for pattern, p in hst["patterns"].items():
        for r in [x for pair in zip(p["baseline"], p["encode"]) for x in pair]:
            lines.append(f"| {r['label'].replace('host ', '')} | {f1(r['cpu_percent'])} | {f2(r['fps'])} | "
                         f"{r['machine_busy_percent_of_one_core']:.0f} | {r['loadavg_before']:.2f} / "
                         f"{r['loadavg_after']:.2f} | {others(r)} |")
    lines += ["", "## Seen along the way", ""]
    fb, fa = g["camhub_video_fds_before_cycles"], g["camhub_video_fds_after_cycles"]
    deleted = [x for x in fa if x.endswith("(deleted)")]
    if deleted:
        lines.append(
            f"- **camhub keeps a descriptor of every removed capture node open.** Its descriptors on /dev/video* were "
            f"{fb} while streaming before the cycles and {fa} after {len(cyc)} cycles ({len(deleted)} on removed "
            f"nodes). As the old number stays taken, the kernel gives vivid's capture node a new number at each "
            f"bind ({g['capture_node']} at start, /dev/{g['capture_node_after_cycles']} after the cycles); camhub "
            "follows it (devices are known by identity), a program that opens a fixed /dev/videoN would not.")
    else:
        lines.append(f"- camhub holds no descriptor of a removed node after the cycles ({fa}).")
    chk = g.get("plain_gstreamer_fd_check") or {}
    if "after_null_and_release" in chk:
        left = chk["after_null_and_release"]
        lines.append(
            f"- A plain GStreamer pipeline (`v4l2src ! caps ! fakesink` from Python gi, {chk['gstreamer']}, no "
            f"camhub) had {chk['playing']} open while playing and "
            + (f"**still {left} after NULL and release** (pipeline refcount {chk['pipeline_refcount_at_release']} "
               "when released): one descriptor per v4l2src instance outlives the pipeline in GStreamer itself. "
               + ("That is why camhub captures with the `v4l` crate instead of v4l2src (it leaked one descriptor, "
                  "and the element, at every attempt before)." if not deleted else
                  "camhub's leak is most likely that one (a new v4l2src at every attempt).")
               if left else "none after NULL and release: the descriptor camhub keeps is not GStreamer's."))
    elif chk:
        lines.append(f"- The plain GStreamer descriptor check failed: {chk.get('error')}.")
    counts = {}
    for c in cyc:
        counts[str(c["unplug"].get("reason"))] = counts.get(str(c["unplug"].get("reason")), 0) + 1
    lines.append(
        "- What ended the stream at an unplug (`camera.status_change` reason): "
        + ", ".join(f"\"{k}\" {v} of {len(cyc)}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        + ". \"cannot read from the device\" is the capture thread's error when the driver unregisters the node under "
        "it, which can come before udevd's remove event; \"device unplugged\" is discovery acting on that event.")
    lines += [""]
    write_markdown(os.path.join(evidence, "v4l2.md"), lines)


def run_line_v4l2(meta):
    return (f"{meta['date']}, commit {meta['git_commit']}, {meta['camhub_version']}, host nproc {meta['nproc']} "
            f"({meta['cpu_model'] or 'unknown CPU'}), load average at end {meta['loadavg_at_end'][0]:.2f}.")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "host":
            host(args[0], int(args[1]), float(args[2]), float(args[3]), args[4:])
        elif cmd == "guest":
            guest(*args)
        elif cmd == "fdcheck":
            fdcheck(*args)
        elif cmd == "report":
            report(*args)
        else:
            sys.exit(f"v4l2.py: unknown command {cmd}")
    except RuntimeError as e:
        log(str(e))
        sys.exit(1)
