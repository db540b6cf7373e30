# FrameRS gateway: FastAPI + uvicorn, CPU only (it stores uploads, probes them and queues jobs;
# it never runs a model). Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t framers-gateway .
# The same image with onnxruntime's CPU build is the CPU worker of deploy/worker-cpu.yaml (which
# runs `python -m workers.main` in it):
#   docker build -f docker/gateway.Dockerfile --build-arg EXTRAS=cpu,s3 -t framers-worker-cpu .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY framers ./framers
COPY core ./core
COPY service ./service
COPY workers ./workers
ARG EXTRAS=s3
RUN pip install ".[${EXTRAS}]"

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH \
    FRAMERS_DATA_DIR=/data FRAMERS_MODEL_STORE=/models
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /data framers \
    && mkdir -p /data /models && chown framers /data
USER framers
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# --proxy-headers: client addresses from a reverse proxy in front (trusted: FORWARDED_ALLOW_IPS).
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-server-header"]
