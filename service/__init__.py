"""FastAPI gateway of FrameRS: uploads, job records, reconstruction requests, auth, limits, metrics.

The gateway never runs a model: it stores uploads, writes records and enqueues jobs (see core/);
workers do the codec work (see workers/).
"""
