#!/usr/bin/env bash
# Vendors the Envoy API protos the xDS server serves (and their imports)
# into proto/envoy-api/, from the envoy-types crate on crates.io, which
# packages envoyproxy/data-plane-api, cncf/xds, bufbuild/protoc-gen-validate
# and googleapis (all Apache-2.0). Only the transitive imports of ROOTS are
# copied. Run it to move to another envoy-types (Envoy API) version; the
# build reads only the vendored copy (no network, no protoc).
set -euo pipefail
version=${ENVOY_TYPES_VERSION:-0.7.7}
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/proto/envoy-api"
ROOTS=(
  envoy/service/discovery/v3/ads.proto
  envoy/config/listener/v3/listener.proto
  envoy/config/cluster/v3/cluster.proto
  envoy/config/route/v3/route.proto
  envoy/config/core/v3/extension.proto
  envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
  envoy/extensions/filters/http/router/v3/router.proto
  envoy/extensions/filters/http/fault/v3/fault.proto
  envoy/extensions/filters/http/wasm/v3/wasm.proto
  envoy/extensions/http/early_header_mutation/header_mutation/v3/header_mutation.proto
  envoy/extensions/clusters/aggregate/v3/cluster.proto
  envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto
  envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto
  envoy/extensions/upstreams/http/v3/http_protocol_options.proto
  envoy/extensions/transport_sockets/tls/v3/tls.proto
  envoy/extensions/transport_sockets/tls/v3/secret.proto
  envoy/config/trace/v3/opentelemetry.proto
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && cargo new -q probe && cd probe && cargo add -q "envoy-types@=$version" && cargo fetch -q)
src=$(cd "$tmp/probe" && cargo metadata -q --format-version 1 \
  | python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="envoy-types"][0]["manifest_path"])')
src="$(dirname "$src")/proto"
python3 - "$src" "$dest" "${ROOTS[@]}" <<'PY'
import os, re, shutil, sys
src, dest, roots = sys.argv[1], sys.argv[2], sys.argv[3:]
trees = sorted(os.listdir(src))
def find(p):
    for t in trees:
        if os.path.exists(os.path.join(src, t, p)):
            return t
    sys.exit(f"{p}: not in {src}")
seen, stack = {}, list(roots)
while stack:
    p = stack.pop()
    if p in seen or p.startswith("google/protobuf/"):
        continue
    seen[p] = find(p)
    text = open(os.path.join(src, seen[p], p)).read()
    stack += re.findall(r'^import\s+(?:public\s+)?"([^"]+)";', text, re.M)
shutil.rmtree(dest, ignore_errors=True)
for p, tree in sorted(seen.items()):
    os.makedirs(os.path.dirname(os.path.join(dest, tree, p)), exist_ok=True)
    shutil.copy(os.path.join(src, tree, p), os.path.join(dest, tree, p))
print(f"vendored {len(seen)} protos from {src}")
PY
cat > "$dest/SOURCE.md" <<MD
# Vendored Envoy API protos

The \`.proto\` files the xDS server serves (Listener, RouteConfiguration,
Cluster, TypedExtensionConfig and the extensions Meridian configures) and
the Aggregated Discovery Service, with their imports — nothing else.
Copied by \`scripts/vendor-envoy-protos.sh\` from the \`envoy-types\` crate,
version $version, on crates.io, which packages:

| folder | upstream | license |
|---|---|---|
| \`data-plane-api/\` | github.com/envoyproxy/data-plane-api | Apache-2.0 |
| \`xds/\` | github.com/cncf/xds | Apache-2.0 |
| \`protoc-gen-validate/\` | github.com/bufbuild/protoc-gen-validate | Apache-2.0 |
| \`googleapis/\` | github.com/googleapis/googleapis | Apache-2.0 |

Unmodified. \`proto/build.rs\` compiles them with protox (the \`xds\` feature).
MD
