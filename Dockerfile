# cutover: the proxy (`cutover serve`) and the buffer worker (`cutover worker`) from one image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY routing ./routing
COPY buffer_worker ./buffer_worker
COPY config ./config
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 cutover
COPY --from=build /install /usr/local
COPY config/cutover.example.yaml /etc/cutover/cutover.example.yaml
USER cutover
WORKDIR /var/lib/cutover
ENV CUTOVER_LISTEN=0.0.0.0:8080 \
    CUTOVER_ADMIN__LISTEN=0.0.0.0:8081
EXPOSE 8080 8081
ENTRYPOINT ["cutover"]
CMD ["serve", "--config", "/etc/cutover/cutover.yaml"]
