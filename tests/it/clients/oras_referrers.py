"""Pushes OCI artifacts with the oras Python client: a base artifact, then two artifacts whose
subject is the base, one with an explicit artifactType and one whose type is its config's media
type. Prints the digests as JSON for the Rust test to check through the referrers API."""

import hashlib
import json
import os
import sys

import oras.client
import oras.oci

host, workdir = sys.argv[1], sys.argv[2]
os.chdir(workdir)
client = oras.client.OrasClient(hostname=host, insecure=True)
user, password = os.environ["BERTH_TEST_CREDS"].split(":", 1)
client.auth.set_basic_auth(user, password)
repo = f"{host}/acme/art"

with open("artifact.txt", "w") as f:
    f.write("the payload")
client.push(target=f"{repo}:v1", files=["artifact.txt"], quiet=True)
base = client.get_manifest(f"{repo}:v1")
subject = oras.oci.Subject.from_manifest(base)

# 1. An explicit artifactType, built with oras' own blob and manifest uploads.
container = client.get_container(f"{repo}:signature")
with open("sig.txt", "w") as f:
    f.write("a signature")
layer = oras.oci.NewLayer("sig.txt", media_type="application/vnd.example.signature.v1")
client.upload_blob("sig.txt", container, layer)
with open("empty.json", "w") as f:
    f.write("{}")
empty = oras.oci.NewLayer("empty.json", media_type="application/vnd.oci.empty.v1+json")
client.upload_blob("empty.json", container, empty)
manifest = oras.oci.NewManifest()
manifest["artifactType"] = "application/vnd.example.signature.v1"
manifest["config"] = {k: empty[k] for k in ("mediaType", "digest", "size")}
manifest["layers"] = [layer]
manifest["subject"] = {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size}
manifest["annotations"] = {"org.example.signer": "ci"}
response = client.upload_manifest(manifest, container)
assert response.status_code == 201, response.text
sig_digest = response.headers["Docker-Content-Digest"]
assert response.headers.get("OCI-Subject") == subject.digest, response.headers

# 2. The artifact type taken from the config media type, through oras' high-level push.
with open("sbom-config.json", "w") as f:
    f.write('{"format":"spdx"}')
with open("sbom.json", "w") as f:
    f.write('{"packages":[]}')
client.push(
    target=f"{repo}:sbom",
    files=["sbom.json"],
    subject=subject,
    manifest_config="sbom-config.json:application/vnd.example.sbom.config.v1+json",
    quiet=True,
)
sbom = client.get_manifest(f"{repo}:sbom")
sbom_digest = "sha256:" + hashlib.sha256(json.dumps(sbom).encode()).hexdigest()

print(json.dumps({"subject": subject.digest, "signature": sig_digest, "sbom": sbom_digest}))
