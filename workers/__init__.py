"""RQ workers: job functions (ids in, records out) and the worker process that runs them.

A worker imports `core/` and the codec, never the web app.
"""
