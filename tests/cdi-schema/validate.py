#!/usr/bin/python3
"""Validates CDI spec files against the CDI project's JSON schema (schema.json and
defs.json beside this script, copied from github.com/cncf-tags/container-device-interface,
schema/, commit 05ae4b5bb730a036cb3f79477bd6676eea4a8c83, Apache-2.0: see LICENSE).
Debian's python3-jsonschema. Usage: validate.py SPEC.json...; exit 1 on the first error."""
import json
import pathlib
import sys

import jsonschema

here = pathlib.Path(__file__).resolve().parent
schema = json.loads((here / "schema.json").read_text())
resolver = jsonschema.RefResolver(base_uri=(here / "schema.json").as_uri(), referrer=schema)
validator = jsonschema.Draft7Validator(schema, resolver=resolver)
status = 0
for path in sys.argv[1:]:
    errors = sorted(validator.iter_errors(json.loads(pathlib.Path(path).read_text())), key=str)
    for e in errors:
        print(f"{path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        status = 1
    if not errors:
        print(f"{path}: valid")
sys.exit(status)
