"""The real cleaning server in a child process: decisions posted over HTTP are on disk before
the answer, so a server killed with SIGKILL comes back (restarted) with all of them; bad
paths get their 4xx over HTTP too."""

from __future__ import annotations

import os
import signal

import pytest

pytestmark = pytest.mark.slow  # two real server processes


def test_decisions_survive_a_killed_server(fresh, models, web, helpers):
    error, true = fresh.errors[0]
    before = helpers.file_hashes(fresh.root)
    server = web.server(fresh.root, models.checkpoint).start()
    try:
        url = server.url
        status, first = web.http(url + "/api/items")
        assert status == 200 and {
            "path",
            "label",
            "predicted",
            "probability",
            "score",
            "issue",
            "duplicate_of",
            "decision",
        } <= set(first["items"][0])
        ok = [
            web.http(url + "/api/decisions", "POST", d)[0]
            for d in (
                {"path": error, "action": "relabel", "label": true},
                {"path": fresh.exact[1], "action": "delete"},
            )
        ]
        assert ok == [200, 200]
        status, answer = web.http(
            url + "/api/decisions", "POST", {"path": "../../etc/passwd", "action": "delete"}
        )
        assert status == 403 and "../../etc/passwd" in answer["error"]
        status, answer = web.http(
            url + "/api/decisions", "POST", {"path": error, "action": "relabel", "label": "cat"}
        )
        assert status == 422 and "'cat'" in answer["error"]
        status, png = web.http(url + "/api/image?path=" + fresh.exact[0])
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(30)
    finally:
        server.stop()
    with web.server(fresh.root, models.checkpoint) as again:
        status, answer = web.http(again.url + "/api/items")
    assert status == 200
    decided = {i["path"]: i["decision"] for i in answer["items"] if i["decision"]}
    assert decided[error]["action"] == "relabel" and decided[error]["label"] == true
    assert decided[fresh.exact[1]]["action"] == "delete" and len(decided) == 2
    assert len(answer["items"]) == len(first["items"])
    assert helpers.file_hashes(fresh.root) == before  # deciding moves nothing
