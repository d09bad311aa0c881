"""The delivery queue on disk: every alert x sink is written here before anything is sent.

One SQLite file (WAL journal, ``synchronous=FULL``: a committed row survives a power cut).
An alert and one ``queued`` row per sink are inserted in one transaction when the alert is
raised; a sink's worker sends the due rows and marks each ``sent`` in its own transaction
right after the sink acknowledged it (HTTP 2xx, MQTT PUBACK), or schedules the next try.

The guarantee: **at least once, duplicates only across a crash**. An alert committed here is
delivered to every sink eventually, across restarts and outages (none lost). It is sent
again only if the process dies between the sink's acknowledgement and the commit of
``sent`` (a window of milliseconds, not reached by SIGTERM, which lets the send in flight
finish and be marked); each try carries the alert id (``Idempotency-Key`` header, ``id`` in
every payload) so a receiver can drop such a repeat.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path

from monitor.state import DELIVERY_FAILED, DELIVERY_QUEUED, DELIVERY_SENT, Alert

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,          -- the Alert as JSON (evidence paths and sha256 included)
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts(id),
    sink TEXT NOT NULL,
    state TEXT NOT NULL,         -- queued, sent, failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS due ON deliveries (sink, state, next_try);
"""


class Outbox:
    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # one connection shared by the sinks' workers
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add(self, alert: Alert, sinks: list[str]) -> None:
        """The alert and a queued delivery to each sink, in one transaction."""
        now = time.time()
        statements = [("INSERT OR IGNORE INTO alerts (id, body, created) VALUES (?, ?, ?)",
                       (alert.id, json.dumps(asdict(alert)), now))]
        statements += [("INSERT OR IGNORE INTO deliveries (alert_id, sink, state, updated) VALUES (?, ?, ?, ?)",
                        (alert.id, sink, DELIVERY_QUEUED, now)) for sink in sinks]
        self._write(statements)

    def due(self, sink: str, now: float | None = None, limit: int = 20) -> list[tuple[Alert, int]]:
        """Queued deliveries to ``sink`` whose next try is due, oldest alert first, with their tries so far."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.body, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
                "WHERE d.sink = ? AND d.state = ? AND d.next_try <= ? ORDER BY a.id LIMIT ?",
                (sink, DELIVERY_QUEUED, time.time() if now is None else now, limit)).fetchall()
        return [(Alert(**json.loads(body)), attempts) for body, attempts in rows]

    def mark_sent(self, alert_id: str, sink: str) -> None:
        self._set(alert_id, sink, DELIVERY_SENT, "")

    def mark_failed(self, alert_id: str, sink: str, error: str) -> None:
        self._set(alert_id, sink, DELIVERY_FAILED, error)

    def _set(self, alert_id: str, sink: str, state: str, error: str) -> None:
        self._write([("UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?, updated = ? "
                      "WHERE alert_id = ? AND sink = ?", (state, error, time.time(), alert_id, sink))])

    def retry_later(self, alert_id: str, sink: str, next_try: float, error: str) -> None:
        self._write([("UPDATE deliveries SET attempts = attempts + 1, next_try = ?, last_error = ?, updated = ? "
                      "WHERE alert_id = ? AND sink = ?", (next_try, error, time.time(), alert_id, sink))])

    def queued(self) -> dict[str, int]:
        """Deliveries waiting, per sink."""
        with self._lock:
            rows = self._db.execute("SELECT sink, COUNT(*) FROM deliveries WHERE state = ? GROUP BY sink",
                                    (DELIVERY_QUEUED,)).fetchall()
        return dict(rows)

    def recent(self, limit: int = 1000) -> list[Alert]:
        """The newest alerts, oldest first, each with its deliveries' states (to fill MonitorState at start)."""
        with self._lock:
            rows = self._db.execute("SELECT id, body FROM alerts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            states = self._db.execute("SELECT alert_id, sink, state FROM deliveries").fetchall()
        by_alert: dict[str, dict[str, str]] = {}
        for alert_id, sink, state in states:
            by_alert.setdefault(alert_id, {})[sink] = state
        alerts = []
        for alert_id, body in reversed(rows):
            alert = Alert(**json.loads(body))
            alert.deliveries = by_alert.get(alert_id, {})
            alerts.append(alert)
        return alerts

    def deliveries(self, alert_id: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT sink, state FROM deliveries WHERE alert_id = ?", (alert_id,)).fetchall()
        return dict(rows)

    def close(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file: a plain copy is complete
            self._db.close()
