"""Python 3.11 names on Python 3.10, the interpreter of the NGC tritonserver 24.10 image.

Each name is the standard library's own on 3.11 and later:
* `timeout(delay)`: asyncio.timeout; on 3.10 the `async-timeout` package (aio-libs) behind the
  same interface: `expired()` is a method, and expiry raises the builtin TimeoutError (3.10's
  asyncio.TimeoutError is another class).
* `StrEnum`: enum.StrEnum (members are str; str() and format() give the value).
* `UTC`: datetime.UTC.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout  # novermin
    from datetime import UTC  # novermin
    from enum import StrEnum  # novermin
else:  # pragma: no cover - exercised by the 3.10 install check (docs/gpu.md)
    import asyncio
    from datetime import timezone
    from enum import Enum
    from types import TracebackType

    import async_timeout

    UTC = timezone.utc

    class StrEnum(str, Enum):
        """enum.StrEnum of 3.11: members are str, and str()/format() give the value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return str(self.value).__format__(spec)

    class _Timeout:
        def __init__(self, delay: float | None) -> None:
            self._inner = async_timeout.timeout(delay)

        async def __aenter__(self) -> _Timeout:
            await self._inner.__aenter__()
            return self

        async def __aexit__(
            self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> bool | None:
            try:
                return await self._inner.__aexit__(kind, exc, tb)
            except asyncio.TimeoutError as expired:
                raise TimeoutError from expired

        def expired(self) -> bool:
            return bool(self._inner.expired)

    def timeout(delay: float | None) -> _Timeout:
        """asyncio.timeout of 3.11: cancels the block after `delay` seconds, raising TimeoutError."""
        return _Timeout(delay)


__all__ = ["UTC", "StrEnum", "timeout"]
