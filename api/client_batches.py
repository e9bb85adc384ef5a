"""The batch methods of `Client` and `AsyncClient` (`api.client`): the batch stream and the
results, page by page. They use the twin's `_send` and `_follow` (the reconnecting SSE loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from api.client_base import AsyncEventStream, EventStream
from api.schemas import BatchResult


class BatchMethods:
    """Mixed into `Client`."""

    def batch_stream(self, batch_id: str, after: int = 0) -> EventStream:
        """The batch's frames (`BatchFrame`: a `run` per status change, then `done`) after
        `after`, live, reconnecting with `Last-Event-ID` until `done`."""
        return EventStream(lambda _: self._follow(batch_id, self._batch_resume(after)))

    def batch_results(self, batch_id: str, after: int = 0,
                      limit: int = 1000) -> Iterator[BatchResult]:
        """Every result of the batch from index `after` on, in submit order, page by page."""
        while True:
            page = self._send(self._batch_results(batch_id, after, limit))
            yield from page.results
            after = page.next_after
            if page.done or not page.results:
                return


class AsyncBatchMethods:
    """Mixed into `AsyncClient`."""

    def batch_stream(self, batch_id: str, after: int = 0) -> AsyncEventStream:
        """The batch's frames (`BatchFrame`: a `run` per status change, then `done`) after
        `after`, live, reconnecting with `Last-Event-ID` until `done`."""
        return AsyncEventStream(lambda _: self._follow(batch_id, self._batch_resume(after)))

    async def batch_results(self, batch_id: str, after: int = 0,
                            limit: int = 1000) -> AsyncIterator[BatchResult]:
        """Every result of the batch from index `after` on, in submit order, page by page."""
        while True:
            page = await self._send(self._batch_results(batch_id, after, limit))
            for result in page.results:
                yield result
            after = page.next_after
            if page.done or not page.results:
                return
