# The inference-only server: an exported .onnx file served by `fastcore-cv serve`, without
# torch or numba (`pip install .` installs the inference set; training is the [train] extra).
#
#   docker build -t fastcore-cv-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/model.onnx:/models/model.onnx:ro" fastcore-cv-serve
#
# The model is mounted read-only at /models/model.onnx (another path: pass it and the flags
# as the command, e.g. `... fastcore-cv-serve /models/other.onnx --host 0.0.0.0`). Inside the
# container the server binds 0.0.0.0 so that the published port reaches it; outside, the
# default stays 127.0.0.1. See docs/deploy.md for replicas behind a load balancer.

FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fastcore_cv ./fastcore_cv
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
# No extras: the inference set only. The check fails the build if torch or numba came along.
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "import importlib.util as u; bad = [m for m in ('torch', 'numba') if u.find_spec(m)]; assert not bad, bad" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin fastcore
USER 10001:10001
EXPOSE 8000
# Readiness: /health answers 503 until the model is loaded and warmed up, then 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as r; sys.exit(r.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["fastcore-cv", "serve"]
CMD ["/models/model.onnx", "--host", "0.0.0.0", "--port", "8000"]
