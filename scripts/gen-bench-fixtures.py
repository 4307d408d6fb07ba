#!/usr/bin/env python3
"""Generates the benchmark inputs in benches/fixtures/ from the captured
AdmissionReview fixtures in tests/fixtures/admission/.

Deterministic: the same inputs always give byte-identical outputs, so the
generated files are committed and `cargo bench` / `scripts/load.sh` need no
Python. Re-run after the captured fixtures change:

    python3 scripts/gen-bench-fixtures.py

Outputs (all minified, i.e. as compact as the API server's own JSON):
  pod-injected.json   pod-create-injected.json (Istio-injected pod; allowed)
  pod-plain.json      pod-create-plain.json (no sidecar; denied)
  deployment.json     deployment-create.json
  pod-large-env.json  pod-create-injected.json plus 830 env vars on the app
                      container (~85 KB; allowed)
"""

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "admission"
OUT = ROOT / "benches" / "fixtures"

ENV_VARS = 830


def load(name):
    return json.loads((SRC / name).read_text())


def dump(name, value):
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    (OUT / name).write_text(text)
    print(f"{OUT.relative_to(ROOT) / name}: {len(text.encode())} bytes")


def env_var(i):
    """A mix of literal values and configMap/secret references, as large
    Java/Spring style deployments carry."""
    name = f"APP_SETTING_{i:04d}"
    if i % 10 == 7:
        return {
            "name": name,
            "valueFrom": {
                "configMapKeyRef": {"name": "productpage-config", "key": f"setting-{i:04d}"}
            },
        }
    if i % 25 == 3:
        return {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "productpage-secrets", "key": f"secret-{i:04d}"}},
        }
    # 30-odd characters of value, varying so nothing compresses to a pattern.
    value = f"http://svc-{i * 7919 % 1000:03d}.bookinfo.svc:{9000 + i % 1000}/v{i % 5}"
    return {"name": name, "value": value}


def large_env_pod():
    review = load("pod-create-injected.json")
    pod = review["request"]["object"]
    app = next(c for c in pod["spec"]["containers"] if c["name"] != "istio-proxy")
    app.setdefault("env", []).extend(env_var(i) for i in range(ENV_VARS))
    return review


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    dump("pod-injected.json", load("pod-create-injected.json"))
    dump("pod-plain.json", load("pod-create-plain.json"))
    dump("deployment.json", load("deployment-create.json"))
    dump("pod-large-env.json", large_env_pod())


if __name__ == "__main__":
    main()
