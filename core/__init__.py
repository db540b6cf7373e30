"""Shared layer of the service: settings, object storage, the durable video record and queue names.

Both the gateway (`service/`) and the workers (`workers/`) import this package; neither owns it.
Nothing here imports FastAPI, the web app or the codec, so a worker never pulls in the gateway.
"""
