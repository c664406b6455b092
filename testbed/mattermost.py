"""A Mattermost stand-in: the slice of API v4 a bot uses, with Mattermost's shapes and errors.

No Mattermost server can be installed on these machines, so this speaks the same HTTP:

- ``GET /api/v4/users/me``, ``GET /api/v4/users/username/{u}``, ``POST /api/v4/users/usernames``,
  ``POST /api/v4/channels/direct`` (201, idempotent), ``POST /api/v4/posts`` (201, message at most
  16383 characters), all behind ``Authorization: Bearer <token>``;
- incoming webhooks ``POST /hooks/{key}`` with ``{"channel": "@user", "text": ...}`` → 200 "ok";
- errors as JSON ``{"id", "message", "detailed_error", "request_id", "status_code"}``, and 429 as
  Mattermost's rate limiter sends it: a text/plain body with ``Retry-After`` and ``X-RateLimit-*``.

For tests, ``/_test/...`` (no token): ``GET posts`` (every delivered message, as
``{"to", "message", "via"}``), ``POST reset``, ``POST fail {"status", "count"}`` (the next
*count* API calls answer *status*), ``POST ratelimit {"count", "retry_after"}``.
Delivered posts are also appended to ``posts.jsonl`` so a restart keeps them.

Run: ``python -m testbed.mattermost CONFIG.json`` (written by the testbed).
"""

from __future__ import annotations

import json
import re
import secrets
import string
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_POST_LENGTH = 16383
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    """A 26-character id in the shape Mattermost uses."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


class ApiError(Exception):
    def __init__(self, status: int, error_id: str, message: str):
        super().__init__(message)
        self.status, self.error_id, self.message = status, error_id, message


class State:
    """Users, channels, posts and injected faults; one lock guards them all."""

    def __init__(self, config: dict, posts_path: Path):
        self.lock = threading.Lock()
        self.token = config["bot_token"]
        self.webhooks = config["webhooks"]  # key -> {"locked_channel": "@name" | None}
        self.users = {u["username"]: u for u in config["users"]}
        self.users_by_id = {u["id"]: u for u in config["users"]}
        self.bot = self.users[config["bot_username"]]
        self.channels: dict[str, frozenset[str]] = {}
        self.posts_path = posts_path
        self.posts = [json.loads(line) for line in self._existing_posts()]
        self.fail_status, self.fail_count = 0, 0
        self.limit_count, self.retry_after = 0, 1

    def _existing_posts(self) -> list[str]:
        if not self.posts_path.exists():
            return []
        return [line for line in self.posts_path.read_text().splitlines() if line.strip()]

    def record(self, to: str, message: str, via: str) -> None:
        entry = {"to": to, "message": message, "via": via}
        self.posts.append(entry)
        with open(self.posts_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def injected_fault(self) -> tuple[int, int] | None:
        """(status, retry_after) of the next injected fault, consuming it; None if none."""
        with self.lock:
            if self.limit_count > 0:
                self.limit_count -= 1
                return 429, self.retry_after
            if self.fail_count > 0:
                self.fail_count -= 1
                return self.fail_status, 0
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MattermostStandIn/1.0"
    state: State  # set on the class by serve()

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    # --- plumbing -----------------------------------------------------------------------
    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise ApiError(400, "api.context.invalid_body_param.app_error",
                           "Unable to parse the request body.")

    def _send(self, status: int, payload, content_type="application/json", headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error: ApiError):
        self._send(error.status, {
            "id": error.error_id, "message": error.message, "detailed_error": "",
            "request_id": new_id(), "status_code": error.status,
        })

    def _authorize(self):
        if self.headers.get("Authorization", "") != f"Bearer {self.state.token}":
            raise ApiError(401, "api.context.session_expired.app_error",
                           "Invalid or expired session, please login again.")

    def _dispatch(self, method: str):
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_test/"):
                return self._test_api(method, path[len("/_test/"):])
            fault = self.state.injected_fault()
            if fault and fault[0] == 429:
                return self._send(429, b"limit exceeded\n", "text/plain; charset=utf-8", {
                    "Retry-After": str(fault[1]), "X-RateLimit-Limit": "10",
                    "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(fault[1]),
                })
            if fault:
                raise ApiError(fault[0], "app.injected_failure", "Injected failure.")
            if path.startswith("/hooks/"):
                return self._webhook(method, path[len("/hooks/"):])
            if path.startswith("/api/v4/"):
                self._authorize()
                return self._api(method, path[len("/api/v4/"):])
            raise ApiError(404, "api.context.404.app_error", "Sorry, we could not find the page.")
        except ApiError as error:
            self._send_error(error)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    # --- API v4 -------------------------------------------------------------------------
    def _api(self, method: str, route: str):
        state = self.state
        if method == "GET" and route == "users/me":
            return self._send(200, _public(state.bot))
        if method == "GET" and (m := re.fullmatch(r"users/username/([^/]+)", route)):
            user = state.users.get(m.group(1))
            if user is None:
                raise ApiError(404, "app.user.missing_account.const", "Unable to find the user.")
            return self._send(200, _public(user))
        if method == "POST" and route == "users/usernames":
            names = self._body()
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ApiError(400, "api.context.invalid_body_param.app_error",
                               "Invalid or missing usernames in request body.")
            return self._send(200, [_public(state.users[n]) for n in names if n in state.users])
        if method == "POST" and route == "channels/direct":
            return self._direct_channel(self._body())
        if method == "POST" and route == "posts":
            return self._post(self._body())
        raise ApiError(404, "api.context.404.app_error", "Sorry, we could not find the page.")

    def _direct_channel(self, ids):
        state = self.state
        if (not isinstance(ids, list) or len(ids) != 2
                or not all(isinstance(i, str) and i in state.users_by_id for i in ids)):
            raise ApiError(400, "api.context.invalid_body_param.app_error",
                           "Invalid or missing user_ids in request body.")
        if state.bot["id"] not in ids:
            raise ApiError(403, "api.context.permissions.app_error",
                           "You do not have the appropriate permissions.")
        members = frozenset(ids)
        name = "__".join(sorted(ids))
        with state.lock:
            channel_id = next((c for c, m in state.channels.items() if m == members), None)
            if channel_id is None:
                channel_id = new_id()
                state.channels[channel_id] = members
        return self._send(201, {"id": channel_id, "type": "D", "name": name,
                                "display_name": "", "team_id": ""})

    def _post(self, body):
        state = self.state
        if not isinstance(body, dict) or not isinstance(body.get("channel_id"), str):
            raise ApiError(400, "api.context.invalid_body_param.app_error",
                           "Invalid or missing channel_id in request body.")
        message = body.get("message", "")
        if not isinstance(message, str) or not message:
            raise ApiError(400, "model.post.is_valid.msg.app_error", "Invalid Message.")
        if len(message) > MAX_POST_LENGTH:
            raise ApiError(400, "model.post.is_valid.msg.app_error", "Invalid Message.")
        members = state.channels.get(body["channel_id"])
        if members is None or state.bot["id"] not in members:
            raise ApiError(403, "api.context.permissions.app_error",
                           "You do not have the appropriate permissions.")
        (other,) = members - {state.bot["id"]} or {state.bot["id"]}
        with state.lock:
            state.record(state.users_by_id[other]["username"], message, "bot")
        return self._send(201, {"id": new_id(), "channel_id": body["channel_id"],
                                "user_id": state.bot["id"], "message": message})

    # --- incoming webhooks --------------------------------------------------------------
    def _webhook(self, method: str, key: str):
        state = self.state
        hook = state.webhooks.get(key)
        if method != "POST" or hook is None:
            raise ApiError(400, "web.incoming_webhook.invalid.app_error", "Invalid webhook.")
        body = self._body()
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            raise ApiError(400, "web.incoming_webhook.text.app_error", "No text specified.")
        channel = body.get("channel", "")
        locked = hook.get("locked_channel")
        if locked and channel and channel != locked:
            raise ApiError(403, "web.incoming_webhook.channel_locked.app_error",
                           "This webhook is not permitted to post to the requested channel.")
        if not isinstance(channel, str) or not channel.startswith("@"):
            raise ApiError(400, "web.incoming_webhook.channel.app_error",
                           "Couldn't find the channel.")
        if channel[1:] not in state.users:
            raise ApiError(400, "web.incoming_webhook.user.app_error", "Couldn't find the user.")
        with state.lock:
            state.record(channel[1:], body["text"], "webhook")
        return self._send(200, b"ok", "text/plain")

    # --- test control -------------------------------------------------------------------
    def _test_api(self, method: str, route: str):
        state = self.state
        if method == "GET" and route == "posts":
            with state.lock:
                return self._send(200, list(state.posts))
        body = self._body() or {}
        with state.lock:
            if method == "POST" and route == "reset":
                state.posts.clear()
                state.posts_path.write_text("")
                state.fail_count = state.limit_count = 0
            elif method == "POST" and route == "fail":
                state.fail_status, state.fail_count = int(body["status"]), int(body["count"])
            elif method == "POST" and route == "ratelimit":
                state.limit_count = int(body["count"])
                state.retry_after = int(body.get("retry_after", 1))
            else:
                raise ApiError(404, "api.context.404.app_error", "No such test route.")
        return self._send(200, {"ok": True})


def _public(user: dict) -> dict:
    return {"id": user["id"], "username": user["username"], "is_bot": user.get("is_bot", False),
            "email": f"{user['username']}@example.org", "delete_at": 0}


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def serve(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    Handler.state = State(config, config_path.parent / "posts.jsonl")
    Handler.disable_nagle_algorithm = True  # else keep-alive requests stall ~40 ms each
    server = _Server(("127.0.0.1", config["port"]), Handler)
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
