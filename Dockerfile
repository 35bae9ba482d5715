# cutover: the proxy (`cutover serve`), the buffer worker (`cutover worker`) and the demo data service
# (`cutover demo-backend`) from one image. tests/test_image.py reproduces the build stage from this file
# (context filtered by .dockerignore, then the same pip install) and runs serve and worker from the result.
FROM python:3.11-slim AS build
WORKDIR /src
# Dependencies first, exactly as locked (hashes checked): this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --prefix=/install -r requirements.lock
# Then the whole context as .dockerignore filters it: every package pyproject.toml finds is installed.
COPY . .
RUN pip install --no-cache-dir --no-deps --prefix=/install .

FROM python:3.11-slim
# The service user owns the spool's directory, a volume: intents spooled while Redis is unreachable must
# outlive the container.
RUN useradd --system --uid 10001 --home-dir /var/lib/cutover cutover \
    && mkdir -p /var/lib/cutover /etc/cutover \
    && chown 10001:10001 /var/lib/cutover
COPY --from=build /install /usr/local
COPY config/cutover.example.yaml /etc/cutover/cutover.example.yaml
USER 10001
WORKDIR /var/lib/cutover
ENV CUTOVER_LISTEN=0.0.0.0:8080 \
    CUTOVER_ADMIN__LISTEN=0.0.0.0:8081 \
    CUTOVER_BUFFER__SPOOL_PATH=/var/lib/cutover/intents.spool
VOLUME /var/lib/cutover
EXPOSE 8080 8081
ENTRYPOINT ["cutover"]
CMD ["serve", "--config", "/etc/cutover/cutover.yaml"]
