"""Crash safety and concurrency of the review database with real writer processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from ichviewer.review import ReviewStore

WRITER = textwrap.dedent("""
    import os, sys, time
    from ichviewer.review import Read, ReviewStore

    path, reader, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    go = sys.argv[4] if len(sys.argv) > 4 else None
    store = ReviewStore(path, actor=reader)
    store.add_reader(reader, "resident")
    print("ready", flush=True)
    while go and not os.path.exists(go):  # start writing together with the other writer
        time.sleep(0.005)
    i = 0
    while count < 0 or i < count:
        read_id = store.log_read(reader, Read(f"1.2.3.{i % 50}", {"ANY": "present" if i % 2 else "absent"},
                                              confidence={"ANY": 1 + i % 5}, note=f"{reader} read {i}"))
        # Only printed after log_read returned, i.e. after COMMIT.
        print(read_id, flush=True)
        i += 1
    store.close()
""")


def _start_writer(script: Path, db: Path, reader: str, count: int, go: Path | None = None) -> subprocess.Popen:
    extra = [str(go)] if go else []
    return subprocess.Popen([sys.executable, str(script), str(db), reader, str(count), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_writer_killed_with_sigkill_loses_no_committed_read(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "review.sqlite"
    proc = _start_writer(script, db, "Dr Killed", -1)
    assert proc.stdout.readline().strip() == "ready"
    committed = []
    try:
        while len(committed) < 60:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            committed.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the writer is inside its loop
        proc.wait(timeout=30)
    # Whatever else it printed before dying was committed too.
    committed += [int(x) for x in proc.stdout.read().split()]
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(db)  # a plain sqlite3 connection: recovery from the WAL happens here
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    present = {r[0] for r in conn.execute("SELECT id FROM reads")}
    assert set(committed) <= present
    # The audit trail has a row for every read that made it.
    audited = {int(r[0]) for r in conn.execute("SELECT entity_id FROM audit_log WHERE entity = 'reads'")}
    assert audited == present
    conn.close()
    with ReviewStore(db) as store:  # and the app can carry on with the file
        assert store.read_count() == len(present)


def test_two_writer_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    db = tmp_path / "review.sqlite"  # not created yet: both processes race to create and migrate it
    n = 150
    go = tmp_path / "go"
    procs = [_start_writer(script, db, name, n, go) for name in ("Dr One", "Dr Two")]
    for proc in procs:  # both have opened (and raced to migrate) the file
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append([int(x) for x in out.split()])
    assert all(len(ids) == n for ids in outputs)
    assert not set(outputs[0]) & set(outputs[1])
    with ReviewStore(db) as store:
        assert store.integrity_check() == "ok"
        assert store.read_count() == 2 * n
        ids = {r["id"] for r in store.reads()}
        assert set(outputs[0]) | set(outputs[1]) == ids
        assert {r["reader"] for r in store.reads()} == {"Dr One", "Dr Two"}
        assert [r[0] for r in store.conn.execute("SELECT name FROM migrations")] == ["0001_initial", "0002_model_run_head_check", "0003_model_run_label_tier", "0004_measurements", "0005_measurement_necks", "0006_measurement_image"]  # each once
