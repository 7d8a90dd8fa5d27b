#!/usr/bin/env bash
# Index rebuild benchmark: how long `camhub check --rebuild` takes per 1000 segments, from nothing (the database
# deleted: every file checked for a cut fragment, demuxed whole, measured, fsynced and indexed, its session recreated
# from its name) and over a whole index (every row kept after a size check), and how long `camhub backup` and
# `camhub restore` of that index take.
#
# camhub records one reference camera (1280x720, 30 fps, GOP 30, 2000 kbit/s, snow picture so the encoder spends the
# bitrate) in segments of REBUILD_SEGMENT_SECONDS and stops; the second segment (whole, cut on keyframes) is copied N
# times under distinct segment names (N/10 sessions of 10 segments each), so the disk holds N real recordings of that
# length. Results: evidence/rebuild.json and evidence/rebuild.md. Work files: evidence/tmp/rebuild/ (the N copies are
# removed at the end).
#
# Usage:  scripts/bench/rebuild.sh
# Env:    REBUILD_SEGMENTS=1000          segment files to rebuild from
#         REBUILD_SEGMENT_SECONDS=2      their length (the demuxer reads each whole: time grows with size)
#         CAMHUB_BIN=path                use this binary and skip the build (default: cargo build --release)
#         EVIDENCE_DIR=evidence          where the results go
# Needs: bash, python3, Linux.
set -euo pipefail

BENCH_NAME=rebuild.sh
# shellcheck source=scripts/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEGMENTS="${REBUILD_SEGMENTS:-1000}"
SEGMENT_SECONDS="${REBUILD_SEGMENT_SECONDS:-2}"
[[ "$SEGMENTS" =~ ^[1-9][0-9]*$ ]] || { note "REBUILD_SEGMENTS must be a positive integer"; exit 64; }
[[ "$SEGMENT_SECONDS" =~ ^[0-9]+$ ]] && [ "$SEGMENT_SECONDS" -ge 2 ] ||
  { note "REBUILD_SEGMENT_SECONDS must be an integer of at least 2"; exit 64; }

build_camhub
testcam_pattern snow ""
bench_workdir rebuild data backup
bench_cleanup_hook() { rm -rf "$WORK/data/recordings"; }
bench_traps

DATA="$WORK/data"
CONFIG="$DATA/camhub.toml"
start_testcam 1 "${PATTERN_ARGS[@]}"
{
  camhub_config_head "$(free_port)" 5000 "rebuild-bench-secret-0123456789abcdef" "$DATA"
  printf '[rtsp_server]\nenabled = false\n[rtmp]\nenabled = false\n[srt]\nenabled = false\n'
  printf '[recording]\nsegment_seconds = %s\n' "$SEGMENT_SECONDS"
  printf '[[cameras]]\nid = "cam"\nurl = "rtsp://127.0.0.1:%s/cam0"\nrecord = "always"\n' "$CAM_PORT"
} >"$CONFIG"
start_camhub "$DATA"
note "recording until the third segment starts"
for ((i = 0; i < 10 * (3 * SEGMENT_SECONDS + 60); i++)); do
  compgen -G "$DATA/recordings/*_0002.mp4" >/dev/null && break
  kill -0 "$CAMHUB_PID" 2>/dev/null || fail_with_log "camhub exited" "$DATA/camhub.log"
  sleep 0.1
done
compgen -G "$DATA/recordings/*_0002.mp4" >/dev/null || fail_with_log "no third segment" "$DATA/camhub.log"
stop_pids "$CAMHUB_STOP_GRACE" "$CAMHUB_PID"
CAMHUB_PID=""
stop_pids 10 "$TESTCAM_PID"
TESTCAM_PID=""

SOURCE="$(compgen -G "$DATA/recordings/*_0001.mp4" | head -n 1)"
SEGMENT_BYTES="$(stat -c %s "$SOURCE")"
mv "$SOURCE" "$WORK/segment.mp4"
rm -f "$DATA"/recordings/* "$DATA"/camhub.db "$DATA"/camhub.db-wal "$DATA"/camhub.db-shm
note "copying one ${SEGMENT_SECONDS} s segment ($SEGMENT_BYTES bytes) $SEGMENTS times"
"$PY" - "$WORK/segment.mp4" "$DATA/recordings" "$SEGMENTS" <<'EOF'
import datetime, shutil, sys
source, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = datetime.datetime(2026, 1, 1)
for i in range(count):
    session, seq = divmod(i, 10)
    stamp = (start + datetime.timedelta(hours=session)).strftime("%Y-%m-%dT%H-%M-%S.000Z")
    shutil.copyfile(source, f"{target}/cam_{stamp}_{0xb0000000 + session:08x}_{seq:04d}.mp4")
EOF
sync

timed() { # OUT COMMAND...: runs it, its stdout to OUT, the wall seconds in SECONDS_TAKEN
  local out="$1" t0 t1
  shift
  t0="$(date +%s.%N)"
  "${CHILD_ENV[@]}" RUST_LOG=warn "$@" >"$out" 2>"$out.err" || { note "$* failed:"; cat "$out" "$out.err" >&2; exit 1; }
  t1="$(date +%s.%N)"
  SECONDS_TAKEN="$("$PY" -c "print(round($t1 - $t0, 3))")"
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
note "check --rebuild from nothing"
timed "$WORK/rebuild-empty.out" "$BIN" check --rebuild --config "$CONFIG"
FROM_NOTHING="$SECONDS_TAKEN"
note "check --rebuild over a whole index"
timed "$WORK/rebuild-whole.out" "$BIN" check --rebuild --config "$CONFIG"
WHOLE="$SECONDS_TAKEN"
note "backup and restore"
timed "$WORK/backup.out" "$BIN" backup --overwrite --to "$WORK/backup" --config "$CONFIG"
BACKUP="$SECONDS_TAKEN"
timed "$WORK/restore.out" "$BIN" restore --from "$WORK/backup" --config "$CONFIG"
RESTORE="$SECONDS_TAKEN"
grep -q "0 kept, $SEGMENTS indexed" "$WORK/rebuild-empty.out" || { note "not every file was indexed:"; tail -n 3 "$WORK/rebuild-empty.out" >&2; exit 1; }
grep -q "$SEGMENTS kept, 0 indexed" "$WORK/rebuild-whole.out" || { note "not every row was kept:"; tail -n 3 "$WORK/rebuild-whole.out" >&2; exit 1; }
DB_BYTES="$(stat -c %s "$WORK/backup/camhub.db")"

collect_versions
"$PY" - "$EVIDENCE" "$SEGMENTS" "$SEGMENT_SECONDS" "$SEGMENT_BYTES" "$FROM_NOTHING" "$WHOLE" "$BACKUP" "$RESTORE" \
  "$DB_BYTES" "$commit" "$version" "$(nproc)" "$LOAD_BEFORE" "$BIN" <<'EOF'
import json, sys
(evidence, n, seconds, size, empty, whole, backup, restore, db, commit, version, cores, load, binary) = sys.argv[1:]
build = "debug build" if "/target/debug/" in binary else "release build" if "/target/release/" in binary else binary
n, seconds, size, db, cores = int(n), int(seconds), int(size), int(db), int(cores)
empty, whole, backup, restore = float(empty), float(whole), float(backup), float(restore)
per1000 = lambda s: round(s * 1000 / n, 2)
report = {
    "commit": commit, "version": version, "build": build, "cores": cores, "load_average_before": load,
    "segments": n, "segment_seconds": seconds, "segment_bytes": size,
    "rebuild_from_nothing_s": empty, "rebuild_from_nothing_per_1000_s": per1000(empty),
    "rebuild_from_nothing_mb_per_s": round(n * size / 1e6 / empty, 1),
    "rebuild_whole_index_s": whole, "rebuild_whole_index_per_1000_s": per1000(whole),
    "backup_s": backup, "restore_s": restore, "database_bytes": db,
}
json.dump(report, open(f"{evidence}/rebuild.json", "w"), indent=2)
md = f"""# Index rebuild, backup and restore

`scripts/bench/rebuild.sh`: {n} segment files of {seconds} s (1280x720, 30 fps, 2000 kbit/s; {size / 1e6:.2f} MB each,
{n * size / 1e9:.2f} GB in all) in {n // 10} sessions; {version} ({build}), commit {commit}, {cores} cores, load
average before the rebuilds {load} (other work on the machine shares the cores and the disk).

| what | time | per 1000 segments |
|---|---|---|
| `check --rebuild`, database deleted (every file demuxed, measured, fsynced, indexed) | {empty:.2f} s ({report["rebuild_from_nothing_mb_per_s"]} MB/s) | {per1000(empty):.2f} s |
| `check --rebuild` over a whole index (every row kept after a size check) | {whole:.2f} s | {per1000(whole):.2f} s |
| `backup` (database of {db / 1e3:.0f} kB, config) | {backup:.2f} s | |
| `restore` | {restore:.2f} s | |
"""
open(f"{evidence}/rebuild.md", "w").write(md)
print(md)
EOF
