"""Roll-ups of the outcome table, kept by database triggers, so the dashboard reads a few thousand rows where the
outcome table holds millions.

``outcome_minutes`` sums each path's outcomes per minute (count, score, cost, latency). ``outcome_details``
counts, per path and hour, the outcomes in each latency bin (a tenth of a decade wide: 1.0-1.1 ms, ..., 9.9-10 ms,
10-11 ms, ...) and with each failure category. Triggers on INSERT, UPDATE and DELETE of ``outcomes`` keep both
exact whichever code writes (a report, a late ``update_outcome``, a replaced outcome, ``prune``), so no store
method needs to know they exist. The migration that creates them fills them from the outcomes already stored.
SQLite's triggers run per row (its one writer at a time cannot deadlock); PostgreSQL's run per statement over its
transition tables, summing the statement's rows and upserting them in key order, so concurrent writers take the
roll-up rows' locks in one order.

A latency bin is ``digits * 100 + first two significant digits`` of the latency in ms (0 below 1 ms), computed
from the integer part's length so it needs no SQL math functions; ``latency_bin`` is the same in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "FAILURE_PREFIX",
    "LATENCY_PREFIX",
    "POSTGRES_ROLLUPS",
    "SQLITE_ROLLUPS",
    "bin_value",
    "hour_details",
    "latency_bin",
    "minute_buckets",
    "percentiles_by_path",
    "percentiles_from_bins",
]

LATENCY_PREFIX, FAILURE_PREFIX = "latency:", "failure:"
MICROS_PER_MINUTE, MICROS_PER_HOUR = 60_000_000, 3_600_000_000


def latency_bin(latency_ms: float) -> int:
    """The latency's bin (see the module docstring): 0 below 1 ms, else digits * 100 + [10, 99]."""
    if latency_ms < 1:
        return 0
    digits = len(str(int(latency_ms)))
    return digits * 100 + min(99, int(latency_ms * 10 / float(f"1e{digits - 1}")))


def bin_value(latency_bin: int) -> float:
    """A bin's midpoint in ms, within 5% of every latency in it."""
    if latency_bin == 0:
        return 0.5
    digits, lead = divmod(latency_bin, 100)
    return (lead + 0.5) / 10 * float(f"1e{digits - 1}")


def percentiles_from_bins(counts: Iterable[tuple[int, int]], fractions: Sequence[float]) -> tuple[float, ...]:
    """Nearest-rank percentiles, as bin midpoints, from (bin, count) pairs."""
    ordered = sorted((b, n) for b, n in counts if n > 0)
    total = sum(n for _, n in ordered)
    found = []
    for fraction in fractions:
        rank = max(1, -(-fraction * total // 1))
        seen = 0
        for latency, n in ordered:
            seen += n
            if seen >= rank:
                found.append(bin_value(latency))
                break
    return tuple(found)


_MINUTE_COLUMNS = "outcomes, score_sum, cost_sum, cost_count, latency_sum, latency_count"
_ADD_MINUTE = ", ".join(f"{name} = outcome_minutes.{name} + excluded.{name}" for name in _MINUTE_COLUMNS.split(", "))
_MINUTE_KEY = "(tenant, goal, minute, path_id)"
_DETAIL_KEY = "(tenant, goal, hour, path_id, detail)"


def _sqlite_bin(value: str) -> str:
    digits = f"length(CAST(CAST({value} AS INTEGER) AS TEXT))"
    lead = f"MIN(99, CAST({value} * 10 / CAST('1e' || ({digits} - 1) AS REAL) AS INTEGER))"
    return f"CASE WHEN {value} < 1 THEN 0 ELSE {digits} * 100 + {lead} END"


def _sqlite_apply(row: str, sign: int) -> list[str]:
    """Statements adding (sign 1) or removing (-1) one outcome row (``NEW``/``OLD``) from the roll-ups."""
    minute, hour = f"{row}.reported_at / {MICROS_PER_MINUTE}", f"{row}.reported_at / {MICROS_PER_HOUR}"
    statements = [
        f"INSERT INTO outcome_minutes (tenant, goal, minute, path_id, {_MINUTE_COLUMNS}) VALUES ({row}.tenant, "
        f"{row}.goal, {minute}, {row}.path_id, {sign}, {sign} * {row}.score, {sign} * COALESCE({row}.cost_usd, 0), "
        f"{sign} * ({row}.cost_usd IS NOT NULL), {sign} * COALESCE({row}.latency_ms, 0), "
        f"{sign} * ({row}.latency_ms IS NOT NULL)) ON CONFLICT {_MINUTE_KEY} DO UPDATE SET {_ADD_MINUTE}"
    ]
    for prefix, value in (
        (LATENCY_PREFIX, _sqlite_bin(f"{row}.latency_ms")),
        (FAILURE_PREFIX, f"{row}.failure_category"),
    ):
        column = "latency_ms" if prefix == LATENCY_PREFIX else "failure_category"
        statements.append(
            f"INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes) SELECT {row}.tenant, "
            f"{row}.goal, {hour}, {row}.path_id, '{prefix}' || ({value}), {sign} WHERE {row}.{column} IS NOT NULL "
            f"ON CONFLICT {_DETAIL_KEY} DO UPDATE SET outcomes = outcome_details.outcomes + excluded.outcomes"
        )
    if sign < 0:
        key = f"tenant = {row}.tenant AND goal = {row}.goal AND path_id = {row}.path_id"
        statements.append(f"DELETE FROM outcome_minutes WHERE {key} AND minute = {minute} AND outcomes = 0")
        statements.append(f"DELETE FROM outcome_details WHERE {key} AND hour = {hour} AND outcomes = 0")
    return statements


def _sqlite_trigger(name: str, event: str, body: list[str]) -> str:
    return f"CREATE TRIGGER {name} AFTER {event} ON outcomes BEGIN {'; '.join(body)}; END"


_SQLITE_FILL = (
    f"INSERT INTO outcome_minutes (tenant, goal, minute, path_id, {_MINUTE_COLUMNS}) "
    f"SELECT tenant, goal, reported_at / {MICROS_PER_MINUTE}, path_id, COUNT(*), SUM(score), "
    "COALESCE(SUM(cost_usd), 0), COUNT(cost_usd), COALESCE(SUM(latency_ms), 0), COUNT(latency_ms) "
    f"FROM outcomes GROUP BY tenant, goal, reported_at / {MICROS_PER_MINUTE}, path_id",
    "INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes) "
    f"SELECT tenant, goal, reported_at / {MICROS_PER_HOUR}, path_id, "
    f"'{LATENCY_PREFIX}' || ({_sqlite_bin('latency_ms')}) AS detail, COUNT(*) FROM outcomes "
    "WHERE latency_ms IS NOT NULL "
    f"GROUP BY tenant, goal, reported_at / {MICROS_PER_HOUR}, path_id, detail",
    "INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes) "
    f"SELECT tenant, goal, reported_at / {MICROS_PER_HOUR}, path_id, '{FAILURE_PREFIX}' || failure_category AS detail, "
    "COUNT(*) FROM outcomes WHERE failure_category IS NOT NULL "
    f"GROUP BY tenant, goal, reported_at / {MICROS_PER_HOUR}, path_id, detail",
)

SQLITE_ROLLUPS: tuple[str, ...] = (
    """CREATE TABLE outcome_minutes (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, minute INTEGER NOT NULL, path_id TEXT NOT NULL,
        outcomes INTEGER NOT NULL, score_sum REAL NOT NULL, cost_sum REAL NOT NULL, cost_count INTEGER NOT NULL,
        latency_sum REAL NOT NULL, latency_count INTEGER NOT NULL,
        PRIMARY KEY (tenant, goal, minute, path_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX outcome_minutes_by_time ON outcome_minutes (tenant, minute)",
    """CREATE TABLE outcome_details (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, hour INTEGER NOT NULL, path_id TEXT NOT NULL, detail TEXT NOT NULL,
        outcomes INTEGER NOT NULL,
        PRIMARY KEY (tenant, goal, hour, path_id, detail)
    ) WITHOUT ROWID""",
    _sqlite_trigger("outcomes_rollup_insert", "INSERT", _sqlite_apply("NEW", 1)),
    _sqlite_trigger("outcomes_rollup_update", "UPDATE", _sqlite_apply("OLD", -1) + _sqlite_apply("NEW", 1)),
    _sqlite_trigger("outcomes_rollup_delete", "DELETE", _sqlite_apply("OLD", -1)),
    *_SQLITE_FILL,
)


def _postgres_bin(value: str) -> str:
    digits = f"length(floor({value})::bigint::text)"
    lead = f"LEAST(99, floor({value} * 10 / power(10::float8, {digits} - 1))::int)"
    return f"CASE WHEN {value} < 1 THEN 0 ELSE {digits} * 100 + {lead} END"


_PG_MINUTE = "floor(extract(epoch FROM {0}.reported_at) / 60)::bigint"
_PG_HOUR = "floor(extract(epoch FROM {0}.reported_at) / 3600)::bigint"
_PG_CHANGED = {
    "INSERT": "SELECT n.*, 1 AS sign FROM new_rows n",
    "DELETE": "SELECT o.*, -1 AS sign FROM old_rows o",
    "UPDATE": "SELECT o.*, -1 AS sign FROM old_rows o UNION ALL SELECT n.*, 1 AS sign FROM new_rows n",
}


def _postgres_function(event: str) -> str:
    """A statement-level trigger function: the statement's rows (transition tables), summed per roll-up row and
    upserted in key order, so concurrent writers lock roll-up rows in one order and cannot deadlock."""
    changed = f"({_PG_CHANGED[event]}) AS c"
    cleanup = ""
    if event != "INSERT":
        cleanup = f"""
        DELETE FROM outcome_minutes m USING (SELECT DISTINCT tenant, goal, {_PG_MINUTE.format("c")} AS minute,
            path_id FROM {changed}) k
        WHERE m.tenant = k.tenant AND m.goal = k.goal AND m.minute = k.minute AND m.path_id = k.path_id
            AND m.outcomes = 0;
        DELETE FROM outcome_details d USING (SELECT DISTINCT tenant, goal, {_PG_HOUR.format("c")} AS hour,
            path_id FROM {changed}) k
        WHERE d.tenant = k.tenant AND d.goal = k.goal AND d.hour = k.hour AND d.path_id = k.path_id
            AND d.outcomes = 0;"""
    return f"""CREATE FUNCTION kalibr_rollup_{event.lower()}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO outcome_minutes (tenant, goal, minute, path_id, {_MINUTE_COLUMNS})
        SELECT tenant, goal, {_PG_MINUTE.format("c")}, path_id, SUM(sign), SUM(sign * score),
            SUM(sign * COALESCE(cost_usd, 0)), SUM(sign * (cost_usd IS NOT NULL)::int),
            SUM(sign * COALESCE(latency_ms, 0)), SUM(sign * (latency_ms IS NOT NULL)::int)
        FROM {changed} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT {_MINUTE_KEY} DO UPDATE SET {_ADD_MINUTE};
        INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes)
        SELECT tenant, goal, hour, path_id, detail, SUM(sign) FROM (
            SELECT tenant, goal, {_PG_HOUR.format("c")} AS hour, path_id,
                '{LATENCY_PREFIX}' || ({_postgres_bin("c.latency_ms")}) AS detail, sign
            FROM {changed} WHERE latency_ms IS NOT NULL
            UNION ALL
            SELECT tenant, goal, {_PG_HOUR.format("c")}, path_id, '{FAILURE_PREFIX}' || failure_category, sign
            FROM {changed} WHERE failure_category IS NOT NULL
        ) AS d GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT {_DETAIL_KEY} DO UPDATE SET outcomes = outcome_details.outcomes + excluded.outcomes;{cleanup}
        RETURN NULL;
    END $$"""


def _postgres_trigger(event: str) -> str:
    tables = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows"}
    referencing = tables.get(event, "OLD TABLE AS old_rows NEW TABLE AS new_rows")
    return (
        f"CREATE TRIGGER outcomes_rollup_{event.lower()} AFTER {event} ON outcomes REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION kalibr_rollup_{event.lower()}()"
    )


POSTGRES_ROLLUPS: tuple[str, ...] = (
    """CREATE TABLE outcome_minutes (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, minute BIGINT NOT NULL, path_id TEXT NOT NULL,
        outcomes BIGINT NOT NULL, score_sum DOUBLE PRECISION NOT NULL, cost_sum DOUBLE PRECISION NOT NULL,
        cost_count BIGINT NOT NULL, latency_sum DOUBLE PRECISION NOT NULL, latency_count BIGINT NOT NULL,
        PRIMARY KEY (tenant, goal, minute, path_id)
    )""",
    "CREATE INDEX outcome_minutes_by_time ON outcome_minutes (tenant, minute)",
    """CREATE TABLE outcome_details (
        tenant TEXT NOT NULL, goal TEXT NOT NULL, hour BIGINT NOT NULL, path_id TEXT NOT NULL, detail TEXT NOT NULL,
        outcomes BIGINT NOT NULL,
        PRIMARY KEY (tenant, goal, hour, path_id, detail)
    )""",
    *(_postgres_function(event) for event in ("INSERT", "UPDATE", "DELETE")),
    *(_postgres_trigger(event) for event in ("INSERT", "UPDATE", "DELETE")),
    f"INSERT INTO outcome_minutes (tenant, goal, minute, path_id, {_MINUTE_COLUMNS}) "
    f"SELECT tenant, goal, {_PG_MINUTE.format('outcomes')}, path_id, COUNT(*), SUM(score), "
    "COALESCE(SUM(cost_usd), 0), COUNT(cost_usd), COALESCE(SUM(latency_ms), 0), COUNT(latency_ms) "
    "FROM outcomes GROUP BY 1, 2, 3, 4",
    "INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes) "
    f"SELECT tenant, goal, {_PG_HOUR.format('outcomes')}, path_id, "
    f"'{LATENCY_PREFIX}' || ({_postgres_bin('latency_ms')}), COUNT(*) FROM outcomes WHERE latency_ms IS NOT NULL "
    "GROUP BY 1, 2, 3, 4, 5",
    "INSERT INTO outcome_details (tenant, goal, hour, path_id, detail, outcomes) "
    f"SELECT tenant, goal, {_PG_HOUR.format('outcomes')}, path_id, '{FAILURE_PREFIX}' || failure_category, COUNT(*) "
    "FROM outcomes WHERE failure_category IS NOT NULL GROUP BY 1, 2, 3, 4, 5",
)

# --- reads --------------------------------------------------------------------------------------------------
_SUMMED = "SUM(outcomes), SUM(score_sum), SUM(cost_sum), SUM(cost_count), SUM(latency_sum), SUM(latency_count)"


def minute_buckets(mark: str, every_goal: bool) -> str:
    """Buckets of whole minutes: parameters (start minute, minutes per bucket, tenant, [goal], start minute)."""
    goal = "" if every_goal else f" AND goal = {mark}"
    return (
        f"SELECT goal, path_id, (minute - {mark}) / {mark} AS bucket, {_SUMMED} FROM outcome_minutes "
        f"WHERE tenant = {mark}{goal} AND minute >= {mark} GROUP BY goal, bucket, path_id "
        "ORDER BY goal, bucket, path_id"
    )


def hour_details(mark: str, prefix: str) -> str:
    """(path id, detail without its prefix, count): parameters (tenant, goal, first hour)."""
    return (
        f"SELECT path_id, substr(detail, {len(prefix) + 1}), SUM(outcomes) FROM outcome_details "
        f"WHERE tenant = {mark} AND goal = {mark} AND hour >= {mark} "
        f"AND detail >= '{prefix}' AND detail < '{prefix[:-1]};' "  # the prefix ends with ':', and ';' follows it
        "GROUP BY path_id, detail HAVING SUM(outcomes) > 0 ORDER BY path_id, detail"
    )


def percentiles_by_path(rows: Iterable[Sequence[object]]) -> dict[str, tuple[float, float]]:
    """``hour_details(LATENCY_PREFIX)`` rows as each path's (p50, p95)."""
    bins: dict[str, list[tuple[int, int]]] = {}
    for path_id, latency, count in rows:
        bins.setdefault(str(path_id), []).append((int(str(latency)), int(str(count))))
    found = {}
    for path_id, counts in bins.items():
        p50, p95 = percentiles_from_bins(counts, (0.5, 0.95))
        found[path_id] = (p50, p95)
    return found
