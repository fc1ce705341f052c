#!/usr/bin/env bash
# Regenerates the test-only CA and the "localhost" server certificate used by the TLS end-to-end tests
# (the Realtime test double serves TLS with them; the bridge trusts the CA through --realtime-ca-file).
# Never use these keys for anything but loopback tests.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$days" \
  -keyout test-ca.key -out test-ca.pem -subj "/CN=callbridge test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey rsa:2048 -nodes -sha256 -keyout localhost.key -out localhost.csr -subj "/CN=localhost"
cat > localhost.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EXT
openssl x509 -req -in localhost.csr -CA test-ca.pem -CAkey test-ca.key -CAcreateserial -sha256 -days "$days" \
  -extfile localhost.ext -out localhost.pem
rm -f localhost.csr localhost.ext test-ca.srl
