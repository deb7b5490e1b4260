"""The appliance's SQLite database: the only package that runs SQL.

- `store`: connections, the one writer (`Store.write()`), backups and checks;
  `migrations`: the numbered schema changes it applies.
- one module per aggregate, each taking the `Database` of a `Store.write()` or `Store.read()`:
  `runs` (plate reads, their wells and rows, pending display images), `samples` (the per-sample
  summaries and their CSV state), `outbox` (messages waiting for the cloud's ack), `admin`
  (audit log, runtime settings, calibration history).
- `queries`: the read models the API and UI page through.
- `litestream`: the restore drill of the replica.

SQL is written out where it is the clearest statement of the rule (the supersede, the pooled
reads, the outbox drain, the STRICT tables of the migrations). sqlite-utils wraps
the connections (`Database`) and does what it does better: `upsert` of a row that replaces
another (runtime settings); its writes nest as savepoints inside the `Store.write()`
transaction, so they commit with the rest or not at all.
"""
