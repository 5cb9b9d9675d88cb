"""Makes the Kubernetes JSON schemas of the kubernetes-validate package usable by kubeconform offline.

    python offline_schemas.py VERSION DEST     e.g. 1.35.0 ~/.cache/eddy/k8s-schemas/x

The package's schemas (kubernetes_validate/kubernetes-json-schema/v<VERSION>-local-strict/) name
themselves with "$id": "https://kubernetes.io/api/<kind>/..." and refer to their shared
definitions as "/api/_definitions.json#/$defs/...", which resolves against that $id to
https://kubernetes.io/api/_definitions.json: kubeconform would try to download it (and fail
offline, reporting "could not find schema"). This writes a copy of the directory to
DEST/v<VERSION>-local-strict/ with the "$id"s removed, so every reference resolves to the
_definitions.json beside the file. Nothing else in the schemas changes.
"""

import json
import os
import shutil
import sys
import tempfile

import kubernetes_validate

REF_PREFIX = "/api/_definitions.json#"


def rewrite(node):
    if isinstance(node, dict):
        node.pop("$id", None)
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                node[key] = "_definitions.json#" + value[len(REF_PREFIX):]
            else:
                rewrite(value)
    elif isinstance(node, list):
        for item in node:
            rewrite(item)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    version, dest = sys.argv[1], sys.argv[2]
    name = f"v{version}-local-strict"
    source = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema", name)
    if not os.path.isdir(source):
        sys.exit(f"the installed kubernetes-validate has no schemas for Kubernetes {version} (no {source})")
    os.makedirs(dest, exist_ok=True)
    # Written beside the destination and renamed at the end: a half-written copy is never used.
    work = tempfile.mkdtemp(prefix=f".{name}.", dir=dest)
    count = 0
    for file in sorted(os.listdir(source)):
        if not file.endswith(".json"):
            continue
        with open(os.path.join(source, file), encoding="utf-8") as f:
            schema = json.load(f)
        rewrite(schema)
        with open(os.path.join(work, file), "w", encoding="utf-8") as f:
            json.dump(schema, f, separators=(",", ":"))
        count += 1
    target = os.path.join(dest, name)
    try:
        os.rename(work, target)
    except OSError:
        # Another run made it first (same package, same result): keep that one.
        shutil.rmtree(work)
        if not os.path.isdir(target):
            raise
    print(f"{count} schemas in {target}")


if __name__ == "__main__":
    main()
