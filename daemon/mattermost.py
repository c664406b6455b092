"""Direct messages to users through Mattermost (API v4), as a bot or through a webhook.

``mode = "bot"``: look the user up (cached), open the DM channel with the bot's user id
(``users/me``, cached; ``channels/direct`` is idempotent, the channel id is cached per
user), post. ``mode = "webhook"``: post ``{"channel": "@user", "text": ...}`` to an incoming
webhook — what the original Carme did with curl in a shell.

Errors: 429 waits out ``Retry-After`` once when it is short, else defers with it; 5xx,
timeouts and connection errors are transient; an unknown user, a rejected token and other
4xx are permanent, with Mattermost's own message. Messages longer than Mattermost accepts
(16383 characters) are **split** into several posts, at line breaks where possible.

The bot token and the webhook URL (its key is a credential) are read from files, sent only
in the Authorization header or as the request URL, and never appear in a log line, an
error message, a response or the audit journal: errors are rebuilt from status codes and
Mattermost's JSON, never from the exception text of the HTTP library (which holds the URL).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from carme.daemon.config import register_section
from carme.daemon.errors import Permanent, Transient
from carme.spool.errors import KeyFileError
from carme.spool.keys import read_secret_file

MAX_POST_LENGTH = 16383
INLINE_RETRY_AFTER = 5.0  # seconds of Retry-After worth waiting for inside the request


@register_section("mattermost")
@dataclass(frozen=True)
class MattermostConfig:
    #: "bot" (API v4 with a bot token) or "webhook" (an incoming webhook)
    mode: str = "bot"
    #: the server, e.g. https://chat.example.org (bot mode)
    url: str = ""
    #: file holding the bot's access token (mode 0600, root)
    token_file: str = ""
    #: file holding the incoming webhook's URL (mode 0600: its key is a credential)
    webhook_url_file: str = ""
    #: seconds for each HTTP call
    timeout: float = 10.0


class MattermostTransient(Transient):
    pass


class MattermostPermanent(Permanent):
    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(code, message)
        self.status = status


def split_message(text: str, limit: int = MAX_POST_LENGTH) -> list[str]:
    """Parts of at most ``limit`` characters, cut at the last line break where there is one."""
    parts = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit + 1)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return parts + [text] if text else parts


def _read_secret(path: str, what: str) -> str:
    if not path:
        raise ValueError(f"[mattermost] {what} is not set")
    try:
        return read_secret_file(Path(path))
    except KeyFileError as error:
        raise ValueError(f"[mattermost] {what}: {error}") from None


class Mattermost:
    def __init__(self, cfg: MattermostConfig):
        if cfg.mode not in ("bot", "webhook"):
            raise ValueError(f'[mattermost] mode must be "bot" or "webhook", not {cfg.mode!r}')
        self.cfg = cfg
        self.session = requests.Session()
        if cfg.mode == "bot":
            if not cfg.url:
                raise ValueError("[mattermost] url is not set (bot mode)")
            self.session.headers["Authorization"] = f"Bearer {_read_secret(cfg.token_file, 'token_file')}"
            self.api = cfg.url.rstrip("/") + "/api/v4"
        else:
            self.webhook = _read_secret(cfg.webhook_url_file, "webhook_url_file")
        self._lock = threading.Lock()
        self._bot_id: str | None = None
        self._user_ids: dict[str, str] = {}
        self._channels: dict[str, str] = {}

    def health(self) -> str:
        return f"{self.cfg.mode}:configured"

    # --- HTTP -------------------------------------------------------------------------------
    def _call(self, method: str, url: str, what: str, json=None, retried: bool = False):
        try:
            response = self.session.request(method, url, json=json, timeout=self.cfg.timeout)
        except requests.Timeout:
            raise MattermostTransient("mattermost_timeout", f"{what}: Mattermost did not answer "
                                      f"within {self.cfg.timeout:g}s") from None
        except requests.RequestException as error:
            raise MattermostTransient("mattermost_unreachable", f"{what}: cannot reach Mattermost "
                                      f"({type(error).__name__})") from None
        if response.status_code == 429:
            wait = _retry_after(response)
            if wait <= INLINE_RETRY_AFTER and not retried:
                time.sleep(wait)
                return self._call(method, url, what, json, retried=True)
            raise MattermostTransient("mattermost_rate_limited", f"{what}: rate limited; retry "
                                      f"after {wait:g}s", retry_after=wait)
        if response.status_code >= 500:
            raise MattermostTransient("mattermost_unavailable", f"{what}: Mattermost answered "
                                      f"{response.status_code}: {_message(response)}")
        if response.status_code == 401:
            raise MattermostPermanent("mattermost_token_rejected", f"{what}: the bot token was "
                                      "rejected (401); check [mattermost] token_file")
        if response.status_code >= 400:
            raise MattermostPermanent("mattermost_refused", f"{what}: Mattermost answered "
                                      f"{response.status_code}: {_message(response)}",
                                      status=response.status_code)
        return response

    # --- bot mode ---------------------------------------------------------------------------
    def _bot(self) -> str:
        if self._bot_id is None:
            self._bot_id = self._call("GET", f"{self.api}/users/me", "who am I").json()["id"]
        return self._bot_id

    def _user_id(self, user: str) -> str:
        if user not in self._user_ids:
            try:
                found = self._call("GET", f"{self.api}/users/username/{user}", f"look up {user}")
            except MattermostPermanent as error:
                if error.status == 404:
                    raise MattermostPermanent("unknown_user",
                                              f"Mattermost has no user {user!r}") from None
                raise
            self._user_ids[user] = found.json()["id"]
        return self._user_ids[user]

    def _channel(self, user: str) -> str:
        with self._lock:
            if user not in self._channels:
                channel = self._call("POST", f"{self.api}/channels/direct", f"open DM with {user}",
                                     json=[self._bot(), self._user_id(user)])
                self._channels[user] = channel.json()["id"]
            return self._channels[user]

    def send(self, user: str, text: str) -> int:
        """Deliver ``text`` to ``user``; return the number of posts it took."""
        parts = split_message(text)
        if self.cfg.mode == "webhook":
            for part in parts:
                self._call("POST", self.webhook, f"message {user} (webhook)",
                           json={"channel": f"@{user}", "text": part})
            return len(parts)
        channel = self._channel(user)
        for part in parts:
            self._call("POST", f"{self.api}/posts", f"message {user}",
                       json={"channel_id": channel, "message": part})
        return len(parts)


def _retry_after(response) -> float:
    for header in ("Retry-After", "X-RateLimit-Reset"):
        try:
            return max(0.0, float(response.headers[header]))
        except (KeyError, ValueError):
            continue
    return 1.0


def _message(response) -> str:
    """Mattermost's own error message (JSON), or the start of a text body."""
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
        return response.text[:200].strip()


def send_message(ctx, request) -> dict:
    messenger = ctx.services.get("mattermost")
    if messenger is None:
        raise Permanent("not_configured", "this daemon has no [mattermost] section")
    return {"delivered": True, "posts": messenger.send(request.args["user"], request.args["message"])}
