# syntax=docker/dockerfile:1
# One image for `switchboard run` (the default) and `switchboard worker`.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot bot
COPY bridges bridges
COPY storage storage
COPY templates templates
# Wheels of Switchboard and its runtime dependencies only (no test or lint tools).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 switchboard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER switchboard
WORKDIR /home/switchboard
ENV SWITCHBOARD_HTTP_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
ENTRYPOINT ["switchboard"]
CMD ["run"]
