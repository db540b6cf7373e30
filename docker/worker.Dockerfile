# FrameRS worker: RQ worker running the codec on the GPU (onnxruntime-gpu, CUDA 12 + cuDNN 9).
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t framers-worker .
# Run with a GPU: docker run --gpus all ... (docker-compose.yml reserves one).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY framers ./framers
COPY core ./core
COPY service ./service
COPY workers ./workers
# The GPU build of ONNX Runtime comes from the `gpu` extra (the CPU build is the `cpu` extra).
RUN pip install ".[gpu,s3]"

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH FRAMERS_DATA_DIR=/data FRAMERS_MODEL_STORE=/models
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /data framers \
    && mkdir -p /data /models && chown framers /data
USER framers
WORKDIR /data
# No HTTP port: healthy = can reach Redis (a dead worker process ends the container instead).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, redis; redis.Redis.from_url(os.environ['FRAMERS_REDIS_URL'], socket_timeout=3).ping()"]
# SIGTERM = finish the current job, then exit: give it time (docker-compose stop_grace_period).
CMD ["python", "-m", "workers.main"]
