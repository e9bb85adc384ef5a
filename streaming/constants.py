"""Every Redis key, channel, TTL and limit runcast uses, in one place (units in the names)."""

KEY_PREFIX = "runcast:"

# One Redis Stream per run is the durable event log; each written batch is PUBLISHed here too.
EVENTS_KEY = KEY_PREFIX + "events:{run_id}"
EVENTS_CHANNEL = KEY_PREFIX + "events-live:{run_id}"

# Run store (tasks.store).
RUN_KEY = KEY_PREFIX + "run:{run_id}"
RUNS_INDEX_KEY = KEY_PREFIX + "runs"  # zset: run_id scored by created_at
RUNNING_KEY = KEY_PREFIX + "running"  # zset: run_id scored by heartbeat deadline
BATCH_KEY = KEY_PREFIX + "batch:{batch_id}"  # hash: batch fields
BATCH_RUNS_KEY = KEY_PREFIX + "batch-runs:{batch_id}"  # list of run ids, in submit order
# The batch's own log (one frame per status change of its runs, then `done`) and its channel.
BATCH_EVENTS_KEY = KEY_PREFIX + "batch-events:{batch_id}"  # stream, entry ids 0-<seq>
BATCH_EVENTS_CHANNEL = KEY_PREFIX + "batch-live:{batch_id}"
DISPATCHING_KEY = KEY_PREFIX + "dispatching"  # zset: batch_id scored by when dispatch is stale
IDEMPOTENCY_KEY = KEY_PREFIX + "idem:{key}"
CANCEL_CHANNEL = KEY_PREFIX + "cancel"  # payload: run_id
REAPER_LOCK_KEY = KEY_PREFIX + "reaper-lock"
WORKERS_KEY = KEY_PREFIX + "workers"  # zset: worker name scored by last heartbeat
QUEUED_KEY = KEY_PREFIX + "queued"  # zset: run_id scored by when it was last sent (tasks.lost)
LOST_SWEEP_LOCK_KEY = KEY_PREFIX + "lost-sweep-lock"

# Stream field holding one JSON envelope.
EVENT_FIELD = "e"

# Defaults of the settings (tasks.settings) and of the libraries used without settings.
DEFAULT_RUN_TTL_S = 86_400  # 1 day: a finished run's record and events
DEFAULT_MAX_EVENTS = 100_000  # cap of one run's event log
DEFAULT_MAX_INPUT_BYTES = 1_048_576  # 1 MiB request body
DEFAULT_TIMEOUT_S = 3_600  # a run's default time limit
DEFAULT_CANCEL_GRACE_S = 5.0  # from a cancel request to a hard stop
DEFAULT_MAX_ATTEMPTS = 2  # executions of one run before a lost worker fails it

# Event writer (streaming.backends.redis).
WRITE_BUFFER_EVENTS = 10_000  # emits block when this many events wait to be written
WRITE_BATCH_EVENTS = 1_000  # most events in one pipeline
WRITE_BATCH_BYTES = 1_048_576  # 1 MiB: a batch stops growing past this much JSON
WRITE_CALL_RUNS = 100  # most runs one script call of a batch appends to (Redis runs it whole)
WRITER_SOCKET_TIMEOUT_S = 10.0  # a write that hangs this long counts as an outage
READ_RETRIES = 5  # a read on a dropped connection is tried again this often
READ_RETRY_BACKOFF_S = (1.0, 0.05)  # (cap, base) of the exponential pause between read retries
OUTAGE_LIMIT_S = 60.0  # an event store outage longer than this fails the flush
RETRY_BACKOFF_MAX_S = 1.0  # longest pause between two write attempts during an outage
REFUSED_RUNS_KEPT = 10_000  # runs whose events the writer refuses, remembered (the oldest go)
UNFINISHED_RUN_TTL_S = 7 * 86_400  # a log whose run never ended still expires (1 week)

# Subscriptions: when no live message came for this long, the log is read again (a safety net
# for messages lost with a dropped pub/sub connection, not the delivery path).
SUBSCRIBE_RESYNC_S = 5.0
SUBSCRIBE_CONFIRM_S = 5.0  # a subscription Redis has not confirmed by then fails (Redis is down)
READ_POOL_CONNECTIONS = 32  # async read connections per event loop (the API), shared by subscribers
FIND_PAGE_EVENTS = 500  # events per XREVRANGE page when looking back for one (last_checkpoint)
READ_POOL_WAIT_S = 30.0  # how long a read waits for a free connection before it fails

# Runs.
HEARTBEAT_INTERVAL_S = 2.0  # a worker refreshes each running run's heartbeat this often
HEARTBEAT_STALE_S = 10.0  # a running run whose heartbeat is older is lost
REAPER_INTERVAL_S = 3.0  # how often workers look for lost runs
BATCH_DISPATCH_CHUNK = 500  # broker messages a worker claims and sends at once
BATCH_DISPATCH_BUDGET_S = 5.0  # one dispatch task sends chunks this long, then re-enqueues itself
BATCH_DISPATCH_AHEAD = 2_000  # a batch's messages waiting in the broker before dispatch pauses
BATCH_DISPATCH_PAUSE_S = 0.5  # a paused dispatch looks again after (at least) this long
BATCH_DISPATCH_STALE_S = 60.0  # a batch whose dispatch made no progress this long is resumed
BATCH_PAGE_RUNS = 1_000  # runs read at once for results and NDJSON
MAX_INPUT_DEPTH = 100  # nesting levels (arrays, objects) of a run's input or metadata
MAX_OUTPUT_DEPTH = 200  # ... of its output: the API's JSON serializer gives up at about 250

# Metrics (tasks.metrics): fleet-wide counters and histograms in Redis hashes, moved by the run
# store's Lua scripts and submit pipeline (no round trip of their own), read at scrape time.
METRICS_SUBMITTED_KEY = KEY_PREFIX + "metrics:submitted"  # hash: agent -> runs
METRICS_FINISHED_KEY = KEY_PREFIX + "metrics:finished"  # hash: "status:agent" -> runs
METRICS_EVENTS_KEY = KEY_PREFIX + "metrics:events"  # hash: agent -> events of ended runs
METRICS_RUN_DURATION_KEY = KEY_PREFIX + "metrics:run-duration"  # hash: "le:agent", "sum:agent"
METRICS_RUN_QUEUE_KEY = KEY_PREFIX + "metrics:run-queue"  # the same, created to started
METRICS_WEBHOOK_DELIVERIES_KEY = KEY_PREFIX + "metrics:webhook-deliveries"  # hash: outcome -> n
RUN_DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                          1800, 3600)
RUN_QUEUE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                       3600)

# Flower (tasks.monitor): how much of a run's input its task shows as arguments.
TASK_INPUT_PREVIEW_CHARS = 200

# Webhooks (tasks.webhooks, tasks.webhook_store, tasks.webhook_delivery).
WEBHOOKS_DUE_KEY = KEY_PREFIX + "webhooks-due"  # zset: "run:<id>"/"batch:<id>" scored by due time
WEBHOOK_MESSAGE_KEY = KEY_PREFIX + "webhook:{member}"  # hash: id, url, body, status of a message
WEBHOOK_MESSAGE_TTL_S = 7 * 86_400  # a message being retried is kept this long (1 week)
DEFAULT_WEBHOOK_MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT_S = 10.0  # one attempt: a receiver silent this long has failed it
WEBHOOK_BACKOFF_S = (5.0, 30.0, 120.0, 600.0, 3_600.0)  # pauses after attempt 1, 2, ...; then hourly
WEBHOOK_RESOLVE_TIMEOUT_S = 5.0  # DNS lookup of a webhook's host at submit
WEBHOOK_LEASE_MARGIN_S = 5.0  # a claimed message is due again after its attempt's limit + this
WEBHOOK_POLL_INTERVAL_S = 0.25  # how often a worker looks for due messages
WEBHOOK_MAX_IN_FLIGHT = 256  # attempts one worker has under way at once
WEBHOOK_THREADS = 32  # threads of a worker's delivery loop for DNS lookups and store calls
WEBHOOK_MAX_URL_CHARS = 2_048
