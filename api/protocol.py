"""The HTTP protocol `lastmeter serve` speaks: uvicorn's, with its one plain-text answer made a problem.

A request that is not HTTP at all to the parser (a control character in a header, a broken request
line) never reaches the app: uvicorn answers it 400 in text/plain and closes the connection. A client
that reads every error as application/problem+json gets one here too.
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import problem

MALFORMED = problem(400, "Bad request", "the request is not well-formed HTTP/1.1 (a header with a control "
                                        "character, or a broken request line); it was not read")


class ProblemHttpProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [name + b": " + value + b"\r\n" for name, value in MALFORMED.raw_headers]  # its type and length
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + MALFORMED.body)
        self.transport.close()
