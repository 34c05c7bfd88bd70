# Image for zonewatch's connectors, correlator and console (one image, one command per service).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY zonewatch ./zonewatch
COPY connectors ./connectors
COPY correlator ./correlator
COPY console ./console
RUN pip install --no-cache-dir . && useradd --system --uid 10001 zonewatch \
    && mkdir -p /var/lib/zonewatch && chown zonewatch /var/lib/zonewatch
COPY rules ./rules
USER zonewatch
ENTRYPOINT ["zonewatch"]
CMD ["--help"]
