"""The server's settings: refused when not finite or out of range (each error naming its
flag or argument), taken from serve/limits.py, and the prediction threads ended with the
app's lifespan."""

from __future__ import annotations

import argparse
import inspect
import threading
import time

import pytest

from fastcore_cv.cli import main
from fastcore_cv.cli.common import positive
from fastcore_cv.perf.abuse import open_slow, seconds_until_closed
from fastcore_cv.serve import create_app, limits
from fastcore_cv.serve.app import run
from fastcore_cv.serve.protocol import server_config


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e999", "0", "-1"])
def test_positive_refuses_non_finite_and_non_positive_numbers(text):
    with pytest.raises(argparse.ArgumentTypeError, match="finite number > 0"):
        positive(float)(text)


@pytest.mark.parametrize("flag", ["--max-upload-mb", "--timeout", "--read-timeout"])
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_serve_flags_refuse_inf_and_nan_naming_the_flag(model_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:  # a usage error, before any server starts
        main(["serve", str(model_path), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a finite number > 0, got {value!r}" in err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout_s": float("inf")}, ValueError, "timeout_s: expected a finite number"),
        ({"timeout_s": float("nan")}, ValueError, "timeout_s: expected a finite number"),
        ({"timeout_s": True}, TypeError, "timeout_s: expected a number"),
        ({"timeout_s": -1.0}, ValueError, "timeout_s: expected a number > 0"),
        ({"concurrency": 0}, ValueError, "concurrency: expected an int >= 1"),
        ({"concurrency": True}, ValueError, "concurrency"),
        ({"threads": 0}, ValueError, "threads"),
    ],
)
def test_create_app_refuses_bad_settings_naming_them(model_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        create_app(model_path, **kwargs)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, False])
def test_server_config_refuses_a_bad_read_timeout(value):
    with pytest.raises((ValueError, TypeError), match="read_timeout_s"):
        server_config(object(), read_timeout_s=value)


def test_defaults_come_from_limits(model_path):
    params = inspect.signature(run).parameters
    assert (params["host"].default, params["port"].default) == (limits.HOST, limits.PORT)
    assert inspect.signature(create_app).parameters["threads"].default == limits.THREADS
    app = create_app(model_path, concurrency=3)
    assert app.state.limits["concurrency"] == 3 == app.state.pool.slots


def _predict_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("predict")]


def test_the_prediction_threads_end_with_the_app(model_path, chelsea_jpeg, http, kit):
    before = _predict_threads()
    with kit.ServerThread(create_app(model_path, concurrency=2)) as s:
        for _ in range(4):  # starts the pool's threads
            status, _, _ = http.request(s.url + "/predict", chelsea_jpeg.read_bytes())
            assert status == 200
        assert len(_predict_threads()) > len(before)
    assert _predict_threads() == before  # the lifespan's end shut the pool down


def test_in_process_servers_run_the_guarded_protocol(model_path, kit):
    """kit.ServerThread uses serve.protocol.server_config, so its read timeout applies."""
    with kit.ServerThread(create_app(model_path), read_timeout_s=0.5) as s:
        port = int(s.url.rsplit(":", 1)[1])
        opened = time.monotonic()
        closed = seconds_until_closed([open_slow("127.0.0.1", port, b"GET / HT")], opened,
                                      opened + 10)  # fmt: skip
    assert closed[0] is not None and closed[0] >= 0.45
