"""Measurement, in one home: single-call latency (``latency``), a real server in a child process
(``server``), concurrent load against it (``load``), process memory (``memory``) and abuse:
costly uploads, slow sockets and a /health watcher (``abuse``).

The CLI's ``bench`` command, the suites in ``bench/`` and the tests all use these modules, so a
figure in bench/RESULTS.md and one a user measures come from the same code. None imports torch
at module level (``latency.torch_calls`` takes a torch model it is given).
"""
