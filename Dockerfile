# One image for the api, worker and flower services (see docker-compose.yml and Procfile).
# It installs runcast as a user does, and as tests/test_install.py does (tests/test_deploy.py
# checks the pip lines agree): the wheel, with its dependencies and no extras.
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streaming ./streaming
COPY tasks ./tasks
COPY api ./api
RUN pip wheel --no-deps --wheel-dir /dist .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /dist /dist
RUN pip install /dist/runcast-*.whl && rm -rf /dist && useradd --create-home --uid 1000 runcast
USER runcast
# no source tree in the image: every command imports the installed package
WORKDIR /home/runcast

EXPOSE 8000
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000"]
