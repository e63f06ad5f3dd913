# syntax=docker/dockerfile:1
# One image for `switchboard run` and `switchboard worker`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot bot
COPY bridges bridges
COPY storage storage
COPY templates templates
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 switchboard
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER switchboard
WORKDIR /home/switchboard
ENV SWITCHBOARD_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["switchboard"]
CMD ["run"]
