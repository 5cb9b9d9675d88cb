"""Checks recorded API answers against an OpenAPI 3.1 document with `jsonschema`.

Usage: check_openapi.py <openapi.json> <exchanges.json>, where exchanges are
[{"path": "/things.action", "status": 200, "body": ...}]. For each, the path must be in the
document with a POST operation documenting the status; if the documented response has a JSON
schema, the body must validate against it (references resolve within the document). Exits
non-zero listing every mismatch.
"""

import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        document = json.load(handle)
    with open(sys.argv[2], encoding="utf-8") as handle:
        exchanges = json.load(handle)
    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(document))
    problems = []
    checked = 0
    for exchange in exchanges:
        path, status, body = exchange["path"], str(exchange["status"]), exchange["body"]
        operation = document.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            problems.append(f"{path}: not in the document")
            continue
        response = operation.get("responses", {}).get(status)
        if response is None:
            problems.append(f"{path}: status {status} is not documented (answer: {json.dumps(body)[:300]})")
            continue
        while "$ref" in response:
            response = resolve(document, response["$ref"])
        content = response.get("content", {}).get("application/json")
        if content is None:
            if body is not None:
                problems.append(f"{path} {status}: documented without a body but answered {json.dumps(body)[:300]}")
            continue
        schema = {"$ref": "urn:openapi#/paths/" + escape(path) + "/post/responses/" + status + "/content/application~1json/schema"}
        validator = Draft202012Validator(schema, registry=registry)
        errors = sorted(validator.iter_errors(body), key=lambda error: list(error.absolute_path))
        for error in errors:
            location = "/".join(str(part) for part in error.absolute_path) or "(root)"
            problems.append(f"{path} {status} at {location}: {error.message}")
        checked += 1
    for problem in problems:
        print(problem)
    print(f"{checked} answers checked, {len(problems)} problems")
    return 1 if problems else 0


def resolve(document, reference):
    node = document
    for part in reference.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def escape(path):
    return path.replace("~", "~0").replace("/", "~1")


if __name__ == "__main__":
    sys.exit(main())
