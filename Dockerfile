# ebox-hub image: one image, one process per container (serve, relay, workers).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
RUN pip install . && useradd --system --uid 10001 hub && mkdir -p /app/var && chown hub /app/var
USER hub
EXPOSE 8080
CMD ["hub", "serve"]
