# syntax=docker/dockerfile:1
#
# Loyalty Vault: production image. Build:  docker build -t loyalty-vault .
# Run (production needs a database, a master-key source and an identity provider; nothing secret is
# baked into the image):
#   docker run -p 8080:8080 -e DATABASE_URL=… -e MASTER_KEY_FILE=/run/secrets/kek \
#     -e AUTH_ISSUER=… -e AUTH_AUDIENCE=… -e AUTH_JWKS_URL=https://… loyalty-vault
# Without them the service exits with code 78, naming every missing variable.
#
# Node 22 (LTS): Node 20 is past its end of life. package.json "engines" still allows 20.19+.
ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build: all dependencies, TypeScript compiled to dist/ (src and migrations) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# No install scripts: none is needed to compile, and none should run with the registry's code.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build && rm -f dist/.tsbuildinfo

# ---- runtime: production dependencies, compiled code, the contract ----
FROM ${NODE_IMAGE} AS runtime
# SHUTDOWN_TIMEOUT_MS stays below docker stop's 10 s grace period: draining ends before a SIGKILL.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    SHUTDOWN_TIMEOUT_MS=8000
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# The service validates every request against this file and serves it at GET /openapi.yaml.
COPY openapi.yaml ./
# Code and dependencies stay root-owned and read-only to the service; only DATA_DIR is writable
# (used by the embedded development default only, never in production).
RUN mkdir -p /app/data && chown 1000:1000 /app/data
# The image's "node" user, by number so that runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
# Slim images have no curl: node's own fetch checks liveness.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM directly for the graceful shutdown.
CMD ["node", "dist/src/main.js"]
