"""An incremental parser of `text/event-stream` bytes, after the WHATWG EventSource rules.

Lines end with CRLF, LF or CR (a CR at the end of a chunk waits for the next one, since it may be
the first half of a CRLF). `field: value` lines fill the frame, lines starting with `:` are
comments (`: ping`), unknown fields are ignored and a blank line ends the frame. A frame with no
`data` is not dispatched; a frame cut off before its blank line never is.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEFrame:
    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._reset_frame()
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None

    def _reset_frame(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes | str) -> list[SSEFrame]:
        """Take the next chunk of the stream; return the frames it completed."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer = self._buffer + text
        frames: list[SSEFrame] = []
        pos = 0
        while (match := _EOL.search(buffer, pos)) is not None:
            if match.group() == "\r" and match.end() == len(buffer):
                break  # maybe half of a CRLF: wait for the next chunk
            frame = self._line(buffer[pos : match.start()])
            if frame is not None:
                frames.append(frame)
            pos = match.end()
        self._buffer = buffer[pos:]
        return frames

    def close(self) -> list[SSEFrame]:
        """End of stream: a pending lone CR still ends its line; an unfinished frame is dropped."""
        frames = self.feed(self._decoder.decode(b"", final=True))
        if self._buffer.endswith("\r"):
            frame = self._line(self._buffer[:-1])
            self._buffer = ""
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, line: str) -> SSEFrame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEFrame | None:
        if not self._data:
            self._reset_frame()
            return None
        frame = SSEFrame(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id if self._id is not None else self.last_event_id,
            retry_ms=self.retry_ms,
        )
        self._reset_frame()
        return frame
