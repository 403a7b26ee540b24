# cdr-etl: the daemon image. Runtime dependencies only, non-root.
# Build: docker build -t cdr-etl .
FROM python:3.12.8-slim-bookworm AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY alembic.ini ./
COPY migrations ./migrations
COPY etl ./etl
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.12.8-slim-bookworm
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home cdr
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CDR_ETL_LOG_FORMAT=json \
    CDR_ETL_HOME=/tmp/cdr-etl
WORKDIR /app
USER cdr
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["cdr-etl"]
CMD ["daemon"]
