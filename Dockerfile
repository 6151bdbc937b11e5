# One image for every DigitServe process: init (migrate + default model), serve, worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY models ./models
COPY trainers ./trainers
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install -e . \
    && useradd --create-home --uid 10001 digitserve \
    && mkdir -p /var/lib/digitserve /data/mnist \
    && chown digitserve /var/lib/digitserve /data/mnist
USER digitserve

ENV VAR_DIR=/var/lib/digitserve \
    MODEL_CACHE_DIR=/var/lib/digitserve/models \
    MNIST_DIR=/data/mnist \
    HOST=0.0.0.0 \
    PORT=8080
EXPOSE 8080
ENTRYPOINT ["digitserve"]
CMD ["serve"]
