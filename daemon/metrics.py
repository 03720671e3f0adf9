"""Prometheus metrics of the daemon, in one registry every part updates and `/metrics` serves.

Names follow Prometheus conventions (`barcast_` prefix, `_total` counters, base units).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = Counter("barcast_feed_messages_total", "Websocket messages received", ["exchange", "kind"],
                   registry=REGISTRY)
TRADES = Counter("barcast_feed_trades_total", "Trades parsed", ["exchange", "symbol"], registry=REGISTRY)
BLOCK_TRADES = Counter("barcast_feed_block_trades_total", "Trades taken in blocks of queued frames (the batched path)",
                       ["exchange"], registry=REGISTRY)
MALFORMED = Counter("barcast_feed_malformed_total", "Malformed or unexpected messages skipped",
                    ["exchange", "reason"], registry=REGISTRY)
RECONNECTS = Counter("barcast_feed_reconnects_total", "Websocket reconnects", ["exchange"], registry=REGISTRY)
FEED_CONNECTED = Gauge("barcast_feed_connected",
                       "Open websockets to the exchange (1 per connection; series taken over get one of their own)",
                       ["exchange"], registry=REGISTRY)
REFUSALS = Counter("barcast_feed_subscription_refusals_total",
                   "Subscriptions the exchange refused (an unknown, delisted or halted symbol; retried with backoff)",
                   ["exchange", "symbol"], registry=REGISTRY)
FEED_REFUSED = Gauge("barcast_feed_series_refused", "1 while the exchange refuses the series' symbol", ["series"],
                     registry=REGISTRY)
BACKFILLED = Counter("barcast_backfilled_bars_total", "Bars fetched from REST backfill", ["exchange", "symbol"],
                     registry=REGISTRY)
FEED_GAPS = Counter("barcast_feed_gaps_total",
                    "Ranges of bars a feed missed across a reconnect or restart (backfilled from REST)",
                    ["exchange", "symbol"], registry=REGISTRY)
BARS_CLOSED = Counter("barcast_bars_closed_total", "Bars closed by the aggregator", ["series"], registry=REGISTRY)
LATE_TRADES = Counter("barcast_late_trades_total", "Trades for an already closed bar", ["series", "outcome"],
                      registry=REGISTRY)
BAR_LAG = Gauge("barcast_bar_lag_seconds", "Wall clock minus the end of the last closed bar", ["series"],
                registry=REGISTRY)
QUEUE_DEPTH = Gauge("barcast_queue_depth", "Items waiting in an internal queue", ["queue"], registry=REGISTRY)
QUEUE_FULL = Counter("barcast_queue_full_total",
                     "Times a bounded queue was full (the forecast queue: not while catching up, where it paces "
                     "the backlog)",
                     ["queue"], registry=REGISTRY)
DB_RETRIES = Counter("barcast_db_write_retries_total",
                     "Database work retried while the database was unavailable: writes (bars, gaps, forecasts, "
                     "scores) and the reads a start or a takeover resumes from (restore, adopt, catch_up)",
                     ["what"], registry=REGISTRY)
FORECAST_LATENCY = Histogram(
    "barcast_forecast_latency_seconds",
    "Feed closing a bar (its end plus the grace period) to forecasts stored, per batch of live bars "
    "(catch-up batches: barcast_forecast_catchup_latency_seconds)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)
#: A separate name, not a label of the one above: existing dashboards and alerts on that one
#: (no labels) keep working and now see only live bars (daemon/live/catchup.py says which).
CATCHUP_LATENCY = Histogram(
    "barcast_forecast_catchup_latency_seconds",
    "Bar handed to the forecaster to forecasts stored, per batch queued while catching up (queue wait included)",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY,
)
CATCHING_UP = Gauge("barcast_catching_up",
                    "1 while the daemon forecasts bars that did not arrive live (replayed or backfilled)",
                    registry=REGISTRY)
FORECASTS = Counter("barcast_forecasts_total", "Forecasts issued", ["series", "model"], registry=REGISTRY)
LIVE_MAE = Gauge("barcast_live_mae", "Rolling live MAE (price units)", ["series", "model", "step"],
                 registry=REGISTRY)
PERSISTENCE_MAE = Gauge("barcast_live_persistence_mae", "Persistence baseline's MAE on the same bars",
                        ["series", "step"], registry=REGISTRY)
LIVE_PINBALL = Gauge("barcast_live_pinball", "Rolling live pinball loss, mean over the quantile levels (price units)",
                     ["series", "model", "step"], registry=REGISTRY)
LIVE_COVERAGE = Gauge("barcast_live_coverage",
                      "Fraction of realised closes inside the served central interval [lowest, highest quantile]",
                      ["series", "model", "step"], registry=REGISTRY)
FORECAST_FALLBACKS = Counter("barcast_forecast_fallbacks_total",
                             "Forecasts served by persistence because the model's output was not finite",
                             ["series", "model"], registry=REGISTRY)
LIVE_PROB_SKILL = Gauge("barcast_live_prob_skill",
                        "Rolling live probabilistic skill: 1 - pinball / climatology's pinball on the same bars",
                        ["series", "model", "step"], registry=REGISTRY)
DRIFT_FLAG = Gauge("barcast_model_drifting", "1 while a model's live error is above persistence by the margin",
                   ["series", "model"], registry=REGISTRY)
CHAMPION_AGE = Gauge("barcast_champion_age_seconds", "Age of the serving model", ["series", "model"],
                     registry=REGISTRY)
TRAINING_RUNS = Counter("barcast_training_runs_total", "Retraining runs", ["series", "outcome"], registry=REGISTRY)
TRAINING_SECONDS = Histogram("barcast_training_duration_seconds", "Retraining run durations",
                             buckets=(10, 30, 60, 120, 300, 600, 1200, 3600, 7200), registry=REGISTRY)
RSS = Gauge("barcast_process_resident_memory_bytes", "Resident set size of the daemon", registry=REGISTRY)
DB_SIZE = Gauge("barcast_database_size_bytes", "On-disk size of the database", registry=REGISTRY)
INSTANCE = Gauge("barcast_instance_info", "This daemon's instance id (value 1)", ["instance", "mode"],
                 registry=REGISTRY)
OWNED_SERIES = Gauge("barcast_owned_series", "Series whose lease this daemon holds", registry=REGISTRY)
LIVE_INSTANCES = Gauge("barcast_live_instances", "Daemons heartbeating on this database", registry=REGISTRY)
LEASE_CHANGES = Counter("barcast_lease_changes_total", "Series leases claimed, released or lost",
                        ["change"], registry=REGISTRY)
FENCED_ROWS = Gauge("barcast_fenced_rows", "Rows refused because their series lease had moved on (since start)",
                    ["kind"], registry=REGISTRY)
WINDOW_RESYNCS = Counter("barcast_window_resyncs_total",
                         "Windows rebuilt from the database because a bar arrived out of order or after a gap",
                         ["series"], registry=REGISTRY)
STREAM_REFILLS = Counter("barcast_stream_refills_total",
                         "Times a forecast stream refilled from the database what a slow client's full queue dropped",
                         registry=REGISTRY)
PRUNED_ROWS = Counter("barcast_pruned_rows_total", "Rows deleted by retention (db/retention.py)", ["table"],
                      registry=REGISTRY)
