"""Limits of the HTTP layer (units in the names)."""

from tasks.constants import BATCH_MAX_RUNS

SSE_SEND_TIMEOUT_S = 30  # a client that has not read for this long is cut off (it resumes)
PING_S = 15  # a `: ping` comment on an SSE stream quiet for this long
MAX_WAIT_S = 300  # longest GET /runs/{id}/wait
MAX_BATCH_RUNS = BATCH_MAX_RUNS  # runs in one POST /batches
