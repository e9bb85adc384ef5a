# One image for the api, worker and flower services (see docker-compose.yml and Procfile).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY streaming ./streaming
COPY tasks ./tasks
COPY api ./api
RUN pip install . && useradd --create-home --uid 1000 runcast
USER runcast

EXPOSE 8000
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000"]
