# twoway's chat server in a container, as a non-root user.
#
#   docker build -t twoway .
#   docker run --rm -p 4001:4001 twoway                         # chat on port 4001
#   docker run --rm -p 6697:6697 -v /etc/letsencrypt:/etc/letsencrypt:ro twoway \
#     serve chat --port 6697 --tls-cert /etc/letsencrypt/live/X/fullchain.pem \
#     --tls-key /etc/letsencrypt/live/X/privkey.pem
#   docker kill --signal HUP CONTAINER                         # reload certificates, config
#
# Settings also come from TWOWAY_* variables (docker run -e TWOWAY_MAX_CONNS=5000) or a
# mounted TOML file (--config /etc/twoway/chat.toml).

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin twoway
USER twoway
# Docker stops a container with SIGTERM: twoway's graceful shutdown (--grace, 5 s) fits in
# docker stop's default 10 s.
STOPSIGNAL SIGTERM
EXPOSE 4001
# The container's network namespace is its own: listening on every address is what -p needs.
ENV TWOWAY_HOST=0.0.0.0 \
    TWOWAY_LOG_TIME=none
# A TCP connect and close: cheap, and it proves the event loop still accepts.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 4001), 2).close()"]
ENTRYPOINT ["twoway"]
CMD ["serve", "chat"]
