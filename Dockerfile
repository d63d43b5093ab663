# syntax=docker/dockerfile:1
# segment-forwarder: build with the toolchain, run without it.
#   docker build -t segment-forwarder .
#   docker run -p 3000:3000 -v sf-data:/data -e ADMIN_TOKEN=... segment-forwarder
# test/docker.test.ts replays these steps (npm ci, build, prune, ENTRYPOINT and CMD, HEALTHCHECK) on a
# machine without a container engine; keep the two in step.

# One LTS line for both stages, so the native addon is built for the Node that loads it.
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
# better-sqlite3 is a native addon: node-gyp needs these when no prebuilt binary matches.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Compile the addon on every core (node-gyp reads JOBS).
ENV JOBS=max
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to node (which drains and exits 0) and reaps zombies.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATABASE_URL=sqlite:/data/segment-forwarder.db
WORKDIR /app
# Owned by root, so the service cannot rewrite its own code.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The SQLite database and, without ENCRYPTION_KEYS, the generated key file (mode 0600) live here.
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 3000
# Slim images have no curl; Node's own fetch checks liveness.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["tini", "--"]
CMD ["node", "dist/src/cli.js", "serve"]
