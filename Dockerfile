# syntax=docker/dockerfile:1
# kvserve: build with dev dependencies, run with production dependencies only, as a non-root
# user, with the shipped model baked in (MODEL_DIR points elsewhere for a mounted one).
# test/docker/dockerfile.test.ts replays these steps; it accepts only the instructions it knows.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY web ./web
# tsc, then esbuild bundles the playground (web/) into dist/web, which the runtime stage copies with dist.
RUN npm run build

FROM node:20-bookworm-slim AS runtime
LABEL org.opencontainers.image.title="kvserve" \
      org.opencontainers.image.description="LLM text generation over an OpenAI-compatible API, with the KV cache as a managed resource" \
      org.opencontainers.image.licenses="MIT"
# The source revision, for kvserve_build_info: docker build --build-arg REVISION=$(git rev-parse --short=12 HEAD)
ARG REVISION=unknown
# Configuration is by environment variable (README: Configuration); these are the image's own.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    MODEL_DIR=/app/models/tiny-shakespeare \
    MALLOC_MMAP_THRESHOLD_=131072 \
    KVSERVE_REVISION=$REVISION
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
COPY models ./models
# Root owns every file; the service only reads them.
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself; kvserve drains and exits 0. No init is
# needed: kvserve starts no child processes (inference runs in a worker thread).
CMD ["node", "--no-concurrent-marking", "dist/src/main.js"]
