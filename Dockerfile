# t1612d container image: compiled JavaScript on the official Node 20 image, production
# dependencies only, non-root, tini as PID 1. Build: `docker build -t t1612d .`
# Run beside Falco with docker-compose.yml (Falco <= 0.43, gRPC) or
# docker-compose.falco-0.44.yml (Falco >= 0.44, http_output); see docs/deploy.md.

# One pinned base for every stage (official image, Debian 12 slim). Bump on purpose.
ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# --- build: dev dependencies + TypeScript compiler, emits dist/ from src/ ---
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- deps: production dependencies only, from the same lock file ---
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- runtime ---
FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM/SIGINT to node (which stops gracefully on the first one)
# and reaps zombies; node itself as PID 1 would ignore signals it has no handler for yet.
# Also a `t1612d` command on PATH, for `docker compose exec t1612d t1612d rules check`.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/* \
  && printf '#!/bin/sh\nexec node /app/bin/t1612d.js "$@"\n' > /usr/local/bin/t1612d \
  && chmod 0755 /usr/local/bin/t1612d
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
# Loaded at run time: dist/sources/proto.js reads ../../proto/falco/*.proto.
COPY proto ./proto
# Default input of `t1612d rules check` (compose mounts the host's copy over it).
COPY falco-rules ./falco-rules
# Files stay root-owned and read-only to the service user. The write-ahead log (data_dir) is
# the one writable place: a volume, so the root filesystem can stay read-only. Group root may
# write it too: the gRPC compose runs the service as 0:0 with every capability dropped (to
# reach Falco's root-owned socket), and without CAP_DAC_OVERRIDE root writes only where its
# user or group may.
RUN mkdir -p /var/lib/t1612d && chown node:root /var/lib/t1612d && chmod 0770 /var/lib/t1612d
ENV T1612D_DATA_DIR=/var/lib/t1612d
VOLUME ["/var/lib/t1612d"]
USER node
EXPOSE 2802
# /healthz answers while the process runs; a fetch from node avoids needing curl in a slim
# image. The port follows T1612D_HTTP_ADDRESS (health needs the HTTP server enabled; with
# T1612D_HTTP_TLS_CERT_FILE set, probe https instead).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const p = (process.env.T1612D_HTTP_ADDRESS || '127.0.0.1:2802').split(':').pop(); fetch('http://127.0.0.1:' + p + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The node flags are src/ops/heap.ts NODE_FLAGS (young generation size, collection on the
# main thread; see there).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=4", "--single-threaded-gc", "/app/bin/t1612d.js"]
CMD ["run"]
