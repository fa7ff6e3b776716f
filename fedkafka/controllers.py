"""Which controller to talk to, for every client of the admin API (proxies, name service, CLI).

Several controllers may share one database; one is active, the others answer 503 naming it in the
`x-fedkafka-active` header (docs/DESIGN.md §3.6). A client is given the list (`--controller URL,URL,...`),
talks to one, and when that one fails or stands by moves to the active one it names, else the next in the list.
A controller serving HTTPS (`--ssl-cert`) is trusted through the CA file in $FEDKAFKA_CA_FILE, else the system's.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

ACTIVE_HEADER = "x-fedkafka-active"
# the header a proxy presents its member secret in: on its heartbeats, and on its registrations (the secret it chose
# for its process, which the registration holds its member to; docs/DESIGN.md §5.2)
MEMBER_SECRET_HEADER = "X-Fedkafka-Member-Secret"
# A registration's proof that the member's previous process has exited: its member secret, which only its parent
# (a --workers supervisor, which drew it and saw the process exit) or the next holder of its view cache's lock can
# present (docs/DESIGN.md §4.9, F4). Several exited processes' (a restart that exited before its registration
# committed, then the next): at most MAX_PREDECESSOR_SECRETS, joined by PREDECESSOR_SEPARATOR (not urlsafe base64)
PREDECESSOR_SECRET_HEADER = "X-Fedkafka-Predecessor-Secret"
MAX_PREDECESSOR_SECRETS = 4
PREDECESSOR_SEPARATOR = ","
MAX_SECRET_LENGTH = 256  # a member secret header's, and each predecessor's
# the controller's `kafka_error` refusing a registration of a live member without its secret (another process, or a
# restart), named after KRaft's for a broker id whose live session another process holds
DUPLICATE_REGISTRATION = "DUPLICATE_BROKER_REGISTRATION"
CA_FILE_ENV = "FEDKAFKA_CA_FILE"
# During a failover every controller answers 503 for seconds (the old leader row's lease, then the takeover): the
# CLI asks again after these pauses, doubling, within its timeout in all (AdminClient; the modules alike)
TAKEOVER_FIRST_PAUSE_S = 0.25
TAKEOVER_MAX_PAUSE_S = 2.0


def tls_verify() -> ssl.SSLContext | bool:
    """httpx's `verify` for the controller's URL: the CA in $FEDKAFKA_CA_FILE, else the system's CAs. A missing or
    unreadable file raises OSError (or ssl.SSLError) at once, not at the first request."""
    ca_file = os.environ.get(CA_FILE_ENV, "").strip()
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def token_problem(token: str) -> str | None:
    """Why `token` (stripped of its ends) cannot be a controller token, or None; never quotes it. A token is printable
    ASCII without whitespace inside: all a `Bearer` header carries whole (an HTTP library refuses a line break in a
    header before sending, and quotes the whole header in its error: the token). One rule for the controller's token
    files (`Tokens`, `fedkafka controller --token-file`) and the clients' (the CLI, proxies, name services; the
    modules' copy, module_utils/fedkafka_api.py `_token_problem`, which cannot import this)."""
    if not token:
        return "is empty"
    if not all("!" <= char <= "~" for char in token):
        return ("holds a line break, a blank or a character other than printable ASCII inside: a token is one word of "
                "printable ASCII")
    return None


class TokenFileRefused(ValueError):
    """A token file `token_problem` refuses; its message is `<file> <problem>`, never the token."""


def read_token(path: Path) -> str:
    """The token in the file `path`, its ends stripped: the one reader of every token file (the controller's, the
    CLI's, the proxies' and the name services'), each caller saying a refusal in its own words. Raises OSError (not
    readable) or TokenFileRefused (`token_problem`)."""
    # bytes that are not UTF-8 become U+FFFD, which the rule refuses with the rest (not a UnicodeDecodeError's crash)
    token = path.read_bytes().decode("utf-8", errors="replace").strip()
    problem = token_problem(token)
    if problem is not None:
        raise TokenFileRefused(f"{path} {problem}")
    return token


def split_urls(value: str) -> list[str]:
    """The controllers `--controller` lists, each once (`distinct_urls`)."""
    urls = distinct_urls(value.split(","))
    if not urls:
        raise ValueError(f"no controller URL in {value!r}")
    return urls


def distinct_urls(urls: list[str]) -> list[str]:
    """`urls` without blanks, each once (a trailing slash aside), in first-listed order: a controller listed twice
    was asked twice at once by a proxy's start round (two registrations of one member in flight, one never awaited)
    and twice in a row by every client moving on from it."""
    return list(dict.fromkeys(u.strip().rstrip("/") for u in urls if u.strip()))


class ControllerList:
    def __init__(self, urls: str | list[str]):
        self.urls = split_urls(urls) if isinstance(urls, str) else distinct_urls(urls)
        self.current = self.urls[0]

    def failed(self, url: str, active_hint: str | None = None) -> str:
        """`url` failed (unreachable, or a standby naming `active_hint`): the controller to try next. Several
        tasks may report the same failure; only the first moves on, so they do not leapfrog each other."""
        if url != self.current:
            return self.current
        hint = (active_hint or "").rstrip("/")
        if hint in self.urls and hint != url:
            self.current = hint
        else:
            self.current = self.urls[(self.urls.index(url) + 1) % len(self.urls)]
        return self.current


class RoundWalk:
    """One round over the listed controllers, each asked at most once: the current one first; after each failure the
    one `ControllerList.failed` moves to (a standby's 503 names the active one), skipping those asked already (a hint
    may name one asked, or the list wrap round to it); done once every listed controller was asked. The rules every
    client follows the active controller by, in one place: a proxy's start round and `_refused_first` (a copy walked
    ahead, on the answers in hand), its deregistration and producer-id blocks, and the CLI. `log`: where a move to
    another controller is logged (None: quiet)."""

    def __init__(self, controllers: ControllerList, log: logging.Logger | None = None):
        self.controllers, self.log, self.asked = controllers, log, set[str]()
        self.last: str | None = None  # the controller asked last (`failed` moves the list's current one on)

    def next(self) -> str | None:
        """The controller whose answer comes next, made the current one: the current one unless asked already, else
        the next in list order not asked; None once every listed one was asked."""
        urls, current = self.controllers.urls, self.controllers.current
        start = urls.index(current) if current in urls else 0
        url = next((url for url in urls[start:] + urls[:start] if url not in self.asked), None)
        if url is not None:
            if self.asked and self.log is not None:
                self.log.info("following controller %s", url)
            self.asked.add(url)
            self.controllers.current = self.last = url
        return url

    def failed(self, url: str, error: BaseException | None = None, hint: str | None = None) -> None:
        """`url` did not answer as the active controller (`error`, or a standby's 503 naming `hint`): on to the one a
        standby names, else the next."""
        self.controllers.failed(url, hint if error is None else active_hint(error))


def not_active_words(url: str, named: str) -> str:
    """What the 503 of `url` naming `named` as the active controller says, in an operator's words (the modules',
    module_utils/fedkafka_api.py, alike): it names itself while it takes over."""
    if named.rstrip("/") == url:
        return "is taking over"
    return f"stands by (active: {named or 'not known yet'})"


def what_they_said(told: dict[str, str]) -> str:
    """Each controller asked and what it said (url -> its words), in the order asked: a whole round in one line, not
    only the last answer (the CLI's errors and a proxy's producer-id block; the modules' copy alike)."""
    return "; ".join(f"{url} {said}" for url, said in told.items())


def takeover_under_way(said: dict[str, str | None]) -> bool:
    """Whether the controllers' answers to one round of a request, none of them as the active one (url -> the
    active one its 503 named, None when it did not answer), show a failover in progress, worth asking again in a
    moment: one holds the leader row and is taking over (it names itself), a standby does not know the active one
    yet (names none), or names a listed one that did not answer as active (gone, its leader row not expired yet).
    Unreachable controllers only, or a standby naming one not listed, show none (docs/DESIGN.md §3.6)."""
    return any(named is not None and (named.rstrip("/") in ("", url) or named.rstrip("/") in said)
               for url, named in said.items())


def active_hint(error: BaseException) -> str | None:
    """The active controller a standby's 503 names (httpx errors; None for anything else)."""
    try:
        response = getattr(error, "response", None)
    except RuntimeError:  # httpx: a request error has no response
        return None
    if response is None or getattr(response, "status_code", None) != 503:
        return None
    return response.headers.get(ACTIVE_HEADER) or None
