# paycore container image: a two-stage build (QW-11). Wheels are built with compilers in the first
# stage; the runtime stage has no compilers, runs as uid 1000 and keeps time in UTC.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV TZ=UTC PGTZ=UTC PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PAYCORE_HTTP_HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels paycore \
    && rm -rf /wheels \
    && python -m compileall -q /usr/local/lib/python3.11/site-packages/paycore \
    && useradd --uid 1000 --create-home paycore
USER 1000
EXPOSE 8080 9091
# `paycore serve` by default; the same image runs `paycore worker` and `paycore migrate`.
ENTRYPOINT ["paycore"]
CMD ["serve"]
