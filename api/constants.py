"""Limits of the HTTP layer (units in the names)."""

from tasks.constants import BATCH_MAX_RUNS

SSE_SEND_TIMEOUT_S = 30  # a client that has not read for this long is cut off (it resumes)
FRAMES_PER_SEND = 1_000  # most SSE frames a catching-up client gets in one send
COALESCE_BUFFER_FRAMES = 4 * FRAMES_PER_SEND  # frames read ahead of a slow client (api.sse.coalesced)
PING_S = 15  # a `: ping` comment on an SSE stream quiet for this long
RUN_READ_CONNECTIONS = 16  # async Redis connections per event loop for reading runs
RUN_READ_RETRIES = 3  # a run read on a dropped connection is tried again this often
FEED_CROWD_CLIENTS = 64  # a run feed with this many clients wakes them at most every ...
FEED_CROWD_WAKE_S = 0.005  # ... 5 ms: fewer, fuller sends while a crowd is attached
MAX_WAIT_S = 300  # longest GET /runs/{id}/wait
MAX_BATCH_RUNS = BATCH_MAX_RUNS  # runs in one POST /batches
