"""What lastmeter's logs may say of a failure: its traceback, never its messages, which may carry an
identifier or a personal value."""

import logging
import traceback
from collections.abc import Iterator


class WithoutMessages(logging.Filter):
    """Logs an exception's traceback without its message, nor those of the exceptions it chains:
    Starlette re-raises what server_fault answered, and the server logs it again, message and all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = "".join(_without_messages(record.exc_info[1]))
            record.exc_info = None
        return True


WITHOUT_MESSAGES = WithoutMessages()


def _without_messages(exc: BaseException) -> Iterator[str]:
    """The traceback of `exc` and of what it chains, oldest first, each exception named by its type
    (a chain that loops back is followed once round, as the traceback module does)."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    for n, each in enumerate(reversed(chain)):
        if n:
            yield "\nwhich led to:\n"
        yield "Traceback (most recent call last):\n"
        yield from traceback.format_tb(each.__traceback__)
        yield f"{type(each).__module__}.{type(each).__qualname__} (message withheld)\n"
