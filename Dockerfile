# The gateway on its embedded defaults: docker build -t ivr-gateway . &&
# docker run -p 8080:8080 ivr-gateway
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app gateway

COPY config ./config
USER gateway

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

# Inside a container the port must be reachable from outside it, so listen on
# all of the container's interfaces; publish it on the host as you need.
ENTRYPOINT ["ivr-gateway"]
CMD ["serve", "--config", "/app/config/gateway.toml", "--host", "0.0.0.0"]
