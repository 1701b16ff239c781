"""Helpers the tests share, imported as ``tests.support.<module>`` (the repository root is on
``sys.path`` through pytest's ``pythonpath``; ``bench`` runs from there too).

Importing this package has no side effects; only :mod:`tests.support.ray_env` sets
environment variables, on purpose, and only where a Ray test imports it.

- :mod:`.net`: free ports and pre-bound sockets on 127.0.0.1
- :mod:`.waiting`: polling until a condition or a job status holds
- :mod:`.live`: the app on uvicorn in a thread of the test process
- :mod:`.serve`: a real ``densenas serve`` subprocess
- :mod:`.fake_executor`: an executor whose workers are threads speaking the worker protocol
- :mod:`.docs`: architecture and latency-table documents
- :mod:`.checks`: checks run alike on SQLite (unit) and PostgreSQL (integration)
- :mod:`.fake_control_plane`, :mod:`.tiny_specs`: what worker tests run against and on
- :mod:`.ray_env`, :mod:`.ray_procs`: the Ray tests' environment and separately started
  processes
"""
