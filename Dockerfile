# The sluiceway runtime image: `docker run IMAGE run /pipelines/orders.yaml`.
# Python is pinned to 3.12 (the seed's target). EXTRAS picks the connectors baked in,
# e.g. --build-arg EXTRAS=postgres,delta,s3,datadog
FROM python:3.12-slim AS build
ARG EXTRAS=""
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN set -eu; \
    flags=""; \
    for extra in $(echo "$EXTRAS" | tr ',' ' '); do flags="$flags --extra $extra"; done; \
    uv sync --frozen --no-dev --no-editable $flags

FROM python:3.12-slim
RUN useradd --create-home --uid 10001 sluiceway
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 SLUICEWAY_LOG_FORMAT=json
USER sluiceway
WORKDIR /pipelines
ENTRYPOINT ["sluiceway"]
CMD ["--help"]
